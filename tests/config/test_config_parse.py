"""Configuration loading: every refusal names its dotted key; the example and the default load."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from mailgw.config import load_config, load_config_text, render
from mailgw.config.default import development_config
from mailgw.config.endpoints import parse_endpoint
from mailgw.config.units import parse_duration, parse_rate, parse_size
from mailgw.errors import ConfigError
from tests.support.certs import make_server_cert

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "etc", "mailgw.toml.example")


class Files:
    """A temp dir with a certificate for localhost and the files configs point at."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.dir = tempfile.mkdtemp()
        case.addCleanup(shutil.rmtree, self.dir)
        self.cert = make_server_cert(self.dir, ["localhost", "127.0.0.1"])
        self.users = os.path.join(self.dir, "users")
        os.close(os.open(self.users, os.O_CREAT | os.O_WRONLY, 0o600))

    def config(self, body: str) -> str:
        return (f'config_version = 1\n[tls.t]\ncert_file = "{self.cert.cert_file}"\nkey_file = "{self.cert.key_file}"\n'
                f'[auth.local]\nusers_file = "{self.users}"\n' + body)


def problems(text: str) -> list[str]:
    try:
        load_config_text(text)
    except ConfigError as exc:
        return exc.problems
    return []


class UnitsTests(SynchronousTestCase):
    def test_units(self) -> None:
        """Durations, sizes and rates carry units and parse to seconds, bytes and (count, seconds)."""
        self.assertEqual(parse_duration("5s"), 5.0)
        self.assertEqual(parse_duration("2m"), 120.0)
        self.assertEqual(parse_duration("500ms"), 0.5)
        self.assertEqual(parse_size("35M"), 35 * 1024 * 1024)
        self.assertEqual(parse_size("512K"), 512 * 1024)
        self.assertEqual(parse_rate("20/5m"), (20, 300.0))
        for bad in ("5", "5 parsecs", "-1s", ""):
            self.assertRaises(ValueError, parse_duration, bad)
        self.assertRaises(ValueError, parse_size, "35X")


class EndpointTests(SynchronousTestCase):
    def test_overlaps(self) -> None:
        """Wildcards overlap specific addresses of their family; [::] overlaps everything; distinct loopbacks do not."""
        def ov(a: str, b: str) -> bool:
            return parse_endpoint(a).overlaps(parse_endpoint(b))
        self.assertTrue(ov("tcp:143", "tcp:143:interface=127.0.0.1"))
        self.assertTrue(ov("tcp6:143:interface=\\:\\:", "tcp:143:interface=0.0.0.0"))
        self.assertTrue(ov("tcp6:143", "tcp:143:interface=192.0.2.1"))
        self.assertFalse(ov("tcp:143:interface=127.0.0.1", "tcp:143:interface=127.0.0.2"))
        self.assertFalse(ov("tcp:143", "tcp:993"))
        self.assertFalse(ov("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"))
        self.assertTrue(ov("systemd:domain=INET:name=imap", "systemd:domain=INET:name=imap"))


class RefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)

    def assertProblem(self, body: str, expected: str) -> None:
        found = problems(self.files.config(body))
        self.assertTrue(any(expected in p for p in found), f"{expected!r} not in {found!r}")

    def test_unknown_key(self) -> None:
        """A misspelt key is refused with its dotted path."""
        self.assertProblem('[imap.secure]\nbind = ["tcp:0:interface=127.0.0.1"]\ntls = "t"\nrequre_tls = true\n',
                           "imap.secure.requre_tls: unknown key")

    def test_wrong_type(self) -> None:
        """A value of the wrong type names the key and the expected type."""
        self.assertProblem('[imap.secure]\nbind = "tcp:143"\ntls = "t"\n', "imap.secure.bind: expected an array")
        self.assertProblem('[imap.secure]\nbind = ["tcp:1"]\ntls = "t"\nrequire_tls = "yes"\n',
                           "imap.secure.require_tls: expected true or false")

    def test_bad_duration_and_size(self) -> None:
        """Durations and sizes without a valid unit are refused."""
        self.assertProblem('[auth]\nfailure_delay = "2 fortnights"\n', "auth.failure_delay: bad duration")
        self.assertProblem('[submission.r]\nbind = ["tcp:1"]\ntls = "t"\nmax_message_size = "35Q"\n',
                           "submission.r.max_message_size: bad size")

    def test_missing_file(self) -> None:
        """A file that does not exist is named with its key."""
        self.assertProblem('[tls.other]\ncert_file = "/nonexistent/c.pem"\nkey_file = "/nonexistent/k.pem"\n',
                           "tls.other.cert_file: file '/nonexistent/c.pem' does not exist")

    def test_tls_port_without_certificate(self) -> None:
        """An implicit-TLS listener without a certificate is refused."""
        self.assertProblem('[imap.s]\nbind_tls = ["tcp:993"]\n', "imap.s.tls: bind_tls needs a certificate")
        self.assertProblem('[imap.s]\nbind_tls = ["tcp:993"]\ntls = "nope"\n', "imap.s.tls: no certificate named 'nope'")

    def test_overlapping_listeners(self) -> None:
        """Two services on overlapping address:port are refused, across protocols and families."""
        self.assertProblem('[imap.a]\nbind = ["tcp:143"]\ntls = "t"\n[imap.b]\nbind = ["tcp:143:interface=127.0.0.1"]\ntls = "t"\n',
                           "imap.b.bind[0]: 'tcp:143:interface=127.0.0.1' overlaps imap.a.bind[0]")
        self.assertProblem('[imap.a]\nbind = ["tcp6:587:interface=\\\\:\\\\:"]\ntls = "t"\n'
                           '[submission.r]\nbind = ["tcp:587:interface=0.0.0.0"]\ntls = "t"\n',
                           "submission.r.bind[0]: 'tcp:587:interface=0.0.0.0' overlaps imap.a.bind[0]")

    def test_admin_off_loopback(self) -> None:
        """Admin listeners must be on loopback."""
        self.assertProblem('[admin]\nhttp = { listen = "tcp:8025" }\n', "admin.http.listen: 'tcp:8025' is not a loopback address")
        self.assertProblem('[admin]\nhttp = { listen = "tcp:8025:interface=192.0.2.1" }\n', "admin.http.listen")

    def test_plaintext_without_tls(self) -> None:
        """plain/login on an IMAP server with require_tls = false is refused."""
        self.assertProblem('[auth.ntlm]\ndomain = "X"\n[imap.legacy]\nbind = ["tcp:143"]\nrequire_tls = false\nauth = ["ntlm", "plain"]\n',
                           "imap.legacy.auth: plaintext mechanisms (plain) are refused")

    def test_inline_secret(self) -> None:
        """A secret written inline is refused with a pointer to *_file."""
        self.assertProblem('[auth.ldap.c]\nurls = ["ldaps://x"]\nbind_dn = "cn=x"\nbind_password = "hunter2"\nuser_base = "dc=x"\n',
                           "auth.ldap.c.bind_password: secrets are never inline")

    def test_version_required(self) -> None:
        """config_version must be present and 1."""
        self.assertTrue(any("config_version: missing" in p for p in problems("")))
        self.assertTrue(any("config_version: unsupported version 2" in p for p in problems("config_version = 2\n")))

    def test_syntax_error(self) -> None:
        """A TOML syntax error is one line."""
        self.assertEqual(len(problems("config_version = = 1\n")), 1)


class ExampleTests(SynchronousTestCase):
    def test_example_loads(self) -> None:
        """etc/mailgw.toml.example loads cleanly once the files it names exist."""
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        with open(EXAMPLE) as handle:
            text = handle.read().replace("/etc/mailgw", root + "/etc").replace("/var/lib/mailgw", root + "/var")
        cert = make_server_cert(os.path.join(root, "etc", "tls"), ["mail.example.com"], stem="mail")
        shutil.copy(cert.ca_file, os.path.join(root, "etc", "tls", "corp-ca.pem"))
        os.makedirs(os.path.join(root, "etc", "secrets"))
        for name in ("users", "secrets/ldap", "admin_keys"):
            path = os.path.join(root, "etc", name)
            with open(path, "w") as handle:
                handle.write("")
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        path = os.path.join(root, "mailgw.toml")
        with open(path, "w") as handle:
            handle.write(text)
        config = load_config(path)
        self.assertEqual(set(config.imap), {"secure", "legacy"})
        self.assertEqual(config.imap["legacy"].auth, ("ntlm",))
        self.assertEqual(set(config.publish), {"exchange_imap4", "exchange_imaps"})
        self.assertEqual(config.submission["relay"].max_message_size, 35 * 1024 * 1024)
        self.assertIn('send_as = "own"', render(config))

    def test_development_default_structure(self) -> None:
        """The development default binds only 127.0.0.1 high ports."""
        text = development_config("/nonexistent-state")
        found = problems(text)
        self.assertTrue(found and all("does not exist" in p for p in found), found)

    def test_show_config_non_default(self) -> None:
        """show-config --non-default omits settings left at their defaults."""
        files = Files(self)
        config = load_config_text(files.config('[imap.s]\nbind = ["tcp:0:interface=127.0.0.1"]\ntls = "t"\npreauth_timeout = "30s"\n'))
        text = render(config, non_default=True)
        self.assertIn('preauth_timeout = "30s"', text)
        self.assertNotIn("autologout", text)
        self.assertIn("autologout", render(config))
        self.assertEqual(load_config_text(render(config)).imap["s"].preauth_timeout, 30.0)
