"""Calendaring at the client: the whole gateway (assemble.build, Maildir store) and imapclient / mbsync over IMAPS.

Four virtual servers share one store: `cal` (calendaring, https), `slow` (the same without
fast_message_retrieval), `web` (use_ssl = false, a path with {uid_url}) and `plain` (no calendaring).
"""

from __future__ import annotations

import email
import email.policy
import os
import quopri
import shutil
import signal
import ssl
import subprocess
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailgw import assemble
from mailgw.config import load_config
from tests.admin.helpers_ops import EventWaiter, close_runners
from tests.imap import calendaring_fixtures as F
from tests.imap.test_imap_assemble import PASSWORD, write_files

SERVERS = """
[imap.cal]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
auth = ["basic"]
calendaring = {{ front_end = "{cal_host}", use_ssl = true }}
[imap.slow]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
auth = ["basic"]
fast_message_retrieval = false
calendaring = {{ front_end = "{cal_host}", use_ssl = true }}
[imap.web]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
auth = ["basic"]
calendaring = {{ front_end = "web.example.com", use_ssl = false, path = "/cal?item={{uid_url}}&id={{ical_uid}}" }}
[imap.plain]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
auth = ["basic"]
"""
STORED = [F.outlook(), F.google(), F.thunderbird_attachment(), F.bare(), F.cancel(), F.plain_mail(), F.malformed()]
MEETING_UIDS = [1, 2, 3, 4, 5]
ITEMS = [b"BODY.PEEK[]", b"RFC822.SIZE", b"BODYSTRUCTURE", b"BODY.PEEK[1]", b"BODY.PEEK[1.1]", b"BODY.PEEK[2]",
         b"BODY.PEEK[]<0.100>", b"BODY.PEEK[HEADER]", b"ENVELOPE", b"RFC822"]


def client(port: int, ca_file: str) -> Any:
    from imapclient import IMAPClient

    c = IMAPClient("127.0.0.1", port, ssl=True, ssl_context=ssl.create_default_context(cafile=ca_file), timeout=30)
    c.login("alice", PASSWORD)
    return c


def header_len(raw: bytes) -> int:
    return raw.index(b"\r\n\r\n") + 4


def boundary(raw: bytes) -> bytes:
    return email.message_from_bytes(raw[: header_len(raw)]).get_boundary().encode()


def link_of(section_1_1: bytes) -> str:
    text = quopri.decodestring(section_1_1).decode("utf-8")
    return next(line for line in text.splitlines() if line.startswith("http"))


class CalendaringLiveTests(TestCase):
    """What FETCH and SEARCH show on each server, fetched item by item and re-parsed."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        text, self.files = write_files(base)
        self.text = text.split("[imap.t]")[0]
        self.path = os.path.join(base, "mailgw.toml")
        self.write_config("owa.example.com")
        self.root = assemble.build(load_config(self.path), reactor, source=lambda: load_config(self.path), environ={})
        self.root.privilegedStartService()
        self.root.startService()
        self.addCleanup(self.root.stopService)
        self.addCleanup(close_runners, self.root.gateway.auth)
        yield self.root.ready()
        self.ports = {svc.label.split(".")[1]: svc.port.getHost().port for svc in self.root.listeners
                      if svc.label.startswith("imap.")}

        def append() -> None:
            with client(self.ports["plain"], self.files.ca_file) as c:
                for raw in STORED:
                    c.append("INBOX", raw)

        yield deferToThread(append)

    def write_config(self, cal_host: str) -> None:
        with open(self.path, "w") as f:
            f.write(self.text + SERVERS.format(cal_host=cal_host))

    def fetch_all(self, server: str) -> dict[int, dict[bytes, Any]]:
        with client(self.ports[server], self.files.ca_file) as c:
            c.select_folder("INBOX", readonly=True)
            return c.fetch(list(range(1, len(STORED) + 1)), ITEMS)

    @defer.inlineCallbacks
    def test_items_agree_with_each_other(self) -> Any:
        """BODY[], RFC822, RFC822.SIZE, BODY[]<0.100>, BODYSTRUCTURE, BODY[n] and the header describe one message."""
        for server in ("cal", "slow"):
            got = yield deferToThread(self.fetch_all, server)
            for uid in MEETING_UIDS:
                item = got[uid]
                whole = item[b"BODY[]"]
                self.assertEqual(item[b"RFC822"], whole)
                self.assertEqual(item[b"RFC822.SIZE"], len(whole), (server, uid))
                self.assertEqual(item[b"BODY[]<0>"], whole[:100])
                self.assertTrue(whole.startswith(item[b"BODY[HEADER]"]))
                msg = email.message_from_bytes(whole, policy=email.policy.default)
                self.assertEqual(msg.get_content_type(), "multipart/mixed")
                structure = item[b"BODYSTRUCTURE"]
                self.assertEqual(structure[1], b"mixed")
                alternative, original = structure[0]
                self.assertEqual((alternative[1], [p[1] for p in alternative[0]]), (b"alternative", [b"plain", b"html"]))
                self.assertEqual(alternative[0][0][6], len(item[b"BODY[1.1]"]))  # the text part's octets
                inner = email.message_from_bytes(STORED[uid - 1])
                if inner.is_multipart():
                    self.assertEqual(original[1].decode(), inner.get_content_subtype())
                else:
                    self.assertEqual((original[0], original[1]), (b"text", b"calendar"))
                self.assertIn(b"Meeting ", item[b"BODY[1]"])
                self.assertIn(b"Content-Type: text/plain", item[b"BODY[1]"])
                self.assertEqual(email.message_from_bytes(STORED[uid - 1]).get_content_type(),
                                 msg.get_payload()[1].get_content_type())
                self.assertIn(item[b"BODY[2]"], STORED[uid - 1])  # the stored body, unchanged
                self.assertEqual(item[b"ENVELOPE"].subject, b"Quarterly review")
                self.assertTrue(link_of(item[b"BODY[1.1]"]).startswith("https://owa.example.com/exchange/alice/INBOX/?cmd=open&uid="))

    @defer.inlineCallbacks
    def test_not_meeting_requests_and_other_servers_as_stored(self) -> Any:
        """Plain mail and a malformed invitation are byte-identical; the server without calendaring shows everything as stored."""
        cal = yield deferToThread(self.fetch_all, "cal")
        plain = yield deferToThread(self.fetch_all, "plain")
        for uid in (6, 7):
            self.assertEqual(cal[uid][b"BODY[]"], STORED[uid - 1])
            self.assertEqual(cal[uid][b"RFC822.SIZE"], len(STORED[uid - 1]))
        for uid, raw in enumerate(STORED, 1):
            self.assertEqual(plain[uid][b"BODY[]"], raw)
            self.assertEqual(plain[uid][b"RFC822.SIZE"], len(raw))
        self.assertEqual(cal[1][b"BODY[]"], (yield deferToThread(self.fetch_all, "slow"))[1][b"BODY[]"])

    @defer.inlineCallbacks
    def test_link_scheme_and_uid_url(self) -> Any:
        """use_ssl = true gives https://, false http://; {uid_url} is the RFC 5092 URL of the message, escaped."""
        def run() -> tuple[int, bytes]:
            with client(self.ports["web"], self.files.ca_file) as c:
                validity = c.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
                return validity, c.fetch([2], [b"BODY.PEEK[1.1]"])[2][b"BODY[1.1]"]

        validity, text = yield deferToThread(run)
        self.assertEqual(link_of(text), "http://web.example.com/cal?item=imap%3A%2F%2Falice%40localhost%2FINBOX%3BUIDVALIDITY%3D"
                                        f"{validity}%2F%3BUID%3D2&id=7kukuqrfedlm2f9t%40google.com")

    @defer.inlineCallbacks
    def test_search_sees_presented_bytes(self) -> Any:
        """SEARCH BODY and LARGER match the summary and the presented size only where calendaring is set."""
        def run(server: str) -> tuple[list[int], list[int]]:
            with client(self.ports[server], self.files.ca_file) as c:
                c.select_folder("INBOX", readonly=True)
                return (sorted(c.search(["BODY", "Open it on the web"])),
                        sorted(c.search(["LARGER", str(len(STORED[0]) + 100), "UID", "1"])))

        self.assertEqual((yield deferToThread(run, "cal")), (MEETING_UIDS, [1]))
        self.assertEqual((yield deferToThread(run, "plain")), ([], []))

    @defer.inlineCallbacks
    def test_copy_copies_the_stored_bytes(self) -> Any:
        """COPY on the calendaring server stores the original; the plain server reads it back unchanged."""
        def run() -> bytes:
            with client(self.ports["cal"], self.files.ca_file) as c:
                c.create_folder("Copied")
                c.select_folder("INBOX")
                c.copy([1], "Copied")
            with client(self.ports["plain"], self.files.ca_file) as c:
                c.select_folder("Copied", readonly=True)
                return c.fetch([1], [b"BODY.PEEK[]"])[1][b"BODY[]"]

        self.assertEqual((yield deferToThread(run)), STORED[0])

    @defer.inlineCallbacks
    def test_reload_applies_from_next_select(self) -> Any:
        """A new front end on SIGHUP: an open session keeps its form until it selects again, then shows the new link."""
        def before() -> Any:
            c = client(self.ports["cal"], self.files.ca_file)
            c.select_folder("INBOX", readonly=True)
            self.assertIn("owa.example.com", link_of(c.fetch([1], [b"BODY.PEEK[1.1]"])[1][b"BODY[1.1]"]))
            return c

        c = yield deferToThread(before)
        self.addCleanup(deferToThread, c.logout)
        self.write_config("owa2.example.com")
        reloaded = EventWaiter(self).next("config_reload")
        os.kill(os.getpid(), signal.SIGHUP)  # MailgwService installed the handler (twistd's main thread: ours)
        self.assertEqual((yield reloaded)["result"], "ok")

        def after() -> tuple[str, str]:
            same = link_of(c.fetch([1], [b"BODY.PEEK[1.1]"])[1][b"BODY[1.1]"])
            c.select_folder("INBOX", readonly=True)
            return same, link_of(c.fetch([1], [b"BODY.PEEK[1.1]"])[1][b"BODY[1.1]"])

        same, fresh = yield deferToThread(after)
        self.assertIn("//owa.example.com/", same)
        self.assertIn("//owa2.example.com/", fresh)

    @defer.inlineCallbacks
    def test_big_meeting_request_streamed(self) -> Any:
        """A 3 MB invitation (a PDF after it) is streamed in its presented form; sizes and ranges agree."""
        pdf = b"JVBERi0xLjQK" * 6 + b"\r\n"
        big = F.google().replace(b"--000000000000mixed--\r\n",
                                 b"--000000000000mixed\r\nContent-Type: application/pdf\r\n"
                                 b"Content-Transfer-Encoding: base64\r\n\r\n" + pdf * 40000 + b"--000000000000mixed--\r\n")

        def run(server: str) -> dict[bytes, Any]:
            with client(self.ports[server], self.files.ca_file) as c:
                if server == "plain":
                    c.create_folder("Big")
                    c.append("Big", big)
                c.select_folder("Big", readonly=True)
                return c.fetch([1], [b"RFC822.SIZE", b"BODY.PEEK[]", b"BODY.PEEK[]<2000000.500>", b"BODY.PEEK[1.1]"])[1]

        self.assertEqual((yield deferToThread(run, "plain"))[b"BODY[]"], big)
        got = yield deferToThread(run, "cal")
        whole = got[b"BODY[]"]
        self.assertEqual(got[b"RFC822.SIZE"], len(whole))
        self.assertGreater(len(whole), len(big))
        self.assertEqual(got[b"BODY[]<2000000>"], whole[2000000:2000500])
        self.assertTrue(whole.endswith(big[header_len(big):] + b"\r\n--" + boundary(whole) + b"--\r\n"))
        self.assertIn("uid=7kukuqrfedlm2f9t%40google.com", link_of(got[b"BODY[1.1]"]))

    @defer.inlineCallbacks
    def test_mbsync_fetches_presented_messages(self) -> Any:
        """mbsync syncs INBOX from the calendaring server: meeting requests arrive with the summary, the rest as stored."""
        root = tempfile.mkdtemp(prefix="mailgw-mbsync-cal-")
        self.addCleanup(shutil.rmtree, root, True)
        conf = os.path.join(root, "mbsyncrc")
        with open(conf, "w") as f:
            f.write(f"IMAPAccount live\nHost 127.0.0.1\nPort {self.ports['cal']}\nUser alice\nPass {PASSWORD}\n"
                    f"SSLType IMAPS\nCertificateFile {self.files.cert_file}\n\nIMAPStore remote\nAccount live\n\n"
                    f"MaildirStore local\nPath {root}/\nInbox {root}/INBOX\n\nChannel sync\nFar :remote:\n"
                    "Near :local:\nPatterns INBOX\nCreate Near\nSyncState *\n")
        res = yield deferToThread(subprocess.run, ["mbsync", "-q", "-c", conf, "sync"], capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace")[-2000:])
        served = yield deferToThread(self.fetch_all, "cal")
        expected = {served[uid][b"BODY[]"].replace(b"\r\n", b"\n") for uid in served}
        got = set()
        for sub in ("cur", "new"):
            for name in os.listdir(os.path.join(root, "INBOX", sub)):
                with open(os.path.join(root, "INBOX", sub, name), "rb") as f:
                    data = f.read().replace(b"\r\n", b"\n")
                got.add(b"".join(line for line in data.splitlines(True) if not line.startswith(b"X-TUID:")))
        self.assertEqual(got, expected)
        self.assertEqual(sum(b"Open it on the web" in m for m in got), len(MEETING_UIDS))
