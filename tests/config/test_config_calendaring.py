"""[imap.NAME] calendaring: front_end must be a host name, path a known template; check-config warns when it does not resolve."""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from mailgw.admin.reload import plan
from mailgw.config import load_config_text
from mailgw.config.resolve import resolves
from tests.admin.ctl_helpers import mailgwctl
from tests.config.test_config_parse import Files, problems

SERVER = """[imap.s]
bind = ["tcp:0:interface=127.0.0.1"]
tls = "t"
calendaring = {calendaring}
"""


class CalendaringConfigTests(SynchronousTestCase):
    """Refusals name the dotted key in one line each."""

    def setUp(self) -> None:
        self.files = Files(self)

    def found(self, calendaring: str) -> list[str]:
        return problems(self.files.config(SERVER.format(calendaring=calendaring)))

    def test_defaults(self) -> None:
        """use_ssl defaults to true and path to Exchange 2003's OWA form."""
        config = load_config_text(self.files.config(SERVER.format(calendaring='{ front_end = "owa.example.com" }')))
        cal = config.imap["s"].calendaring
        assert cal is not None
        self.assertEqual((cal.front_end, cal.use_ssl, cal.path),
                         ("owa.example.com", True, "/exchange/{user}/{mailbox}/?cmd=open&uid={ical_uid}"))

    def test_front_end_must_be_a_host_name(self) -> None:
        """An IP literal, a port or a scheme is refused with one line naming calendaring.front_end."""
        for value, why in (("192.0.2.7", "IP literal"), ("[2001:db8::1]", "IP literal"), ("2001:db8::1", "IP literal"),
                           ("owa.example.com:8443", "port"), ("https://owa.example.com", "scheme"),
                           ("owa.example.com/owa", "not a host name"), ("", "not a host name")):
            found = self.found(f'{{ front_end = "{value}" }}')
            self.assertEqual(len(found), 1, found)
            self.assertTrue(found[0].startswith("imap.s.calendaring.front_end: "), found)
            self.assertIn(why, found[0])

    def test_front_end_required(self) -> None:
        """A calendaring table without front_end is refused."""
        self.assertIn("imap.s.calendaring.front_end: missing (required)", self.found("{ use_ssl = false }"))

    def test_path_template(self) -> None:
        """Unknown placeholders, attribute access, format specs and a relative path are refused; known ones load."""
        for path in ("/x/{nope}", "/x/{user.__class__}", "/x/{uid:>9}", "/x/{user", "relative/{user}"):
            found = self.found(f'{{ front_end = "owa.example.com", path = "{path}" }}')
            self.assertEqual(len(found), 1, (path, found))
            self.assertTrue(found[0].startswith("imap.s.calendaring.path: "), found)
        ok = '{ front_end = "owa.example.com", path = "/o/{user}/{mailbox}/{uid}/{uidvalidity}?u={uid_url}&i={ical_uid}" }'
        self.assertEqual(self.found(ok), [])

    def test_calendaring_is_live_on_reload(self) -> None:
        """Setting, changing or removing calendaring is a live change, not a restart."""
        base = load_config_text(self.files.config(SERVER.format(calendaring='{ front_end = "owa.example.com" }')))
        changed = load_config_text(self.files.config(SERVER.format(calendaring='{ front_end = "web.example.com", use_ssl = false }')))
        result = plan(base, changed, ["imap.*.calendaring"])
        self.assertEqual((result.restart, sorted(result.live)),
                         ([], ["imap.s.calendaring.front_end", "imap.s.calendaring.use_ssl"]))


class ResolveWarningTests(SynchronousTestCase):
    """`mailgwctl check-config` warns (exit 0) when front_end does not resolve, and never hangs on it."""

    def check(self, host: str, code: int = 0) -> tuple[int, str]:
        files = Files(self)
        path = os.path.join(tempfile.mkdtemp(dir=files.dir), "mailgw.toml")
        with open(path, "w") as f:
            f.write(files.config(f'[auth]\nbackends = ["local"]\n' + SERVER.format(calendaring=f'{{ front_end = "{host}" }}')))
        run = mailgwctl("check-config", "--config", path)
        self.assertEqual(run.code, code, run.err)
        return run.code, run.err

    def test_ip_literal_refused_by_check_config(self) -> None:
        """check-config exits 78 with one line naming imap.s.calendaring.front_end for an IP literal."""
        _, err = self.check("192.0.2.7", 78)
        self.assertEqual(err.splitlines(), ["config error: imap.s.calendaring.front_end: '192.0.2.7' is an IP literal: "
                                            "give the front end's host name (FQDN)"])

    def test_unresolvable_warns(self) -> None:
        """nonexistent.invalid (RFC 2606: never resolves) gives one warning line naming the key."""
        _, err = self.check("nonexistent.invalid")
        lines = [line for line in err.splitlines() if line.startswith("warning: ")]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("imap.s.calendaring.front_end: 'nonexistent.invalid'", lines[0])

    def test_resolvable_is_quiet(self) -> None:
        """localhost resolves: no warning."""
        _, err = self.check("localhost")
        self.assertNotIn("calendaring", err)

    def test_hung_resolver_times_out(self) -> None:
        """A resolver that never answers gives None after the timeout instead of hanging."""
        import threading

        never = threading.Event()
        self.addCleanup(never.set)
        self.assertIsNone(resolves("owa.example.com", 0.05, lambda *a: never.wait(5)))
