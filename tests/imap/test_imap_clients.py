"""Real clients (imaplib, imapclient, curl) against in-process listeners on loopback TLS."""

from __future__ import annotations

import imaplib
import ssl
import subprocess
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial import unittest

from tests.imap.imap_live import PASSWORD, LiveServer, certificate

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: caf\xc3\xa9 8-bit\r\n"
           b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\nBody line\r\n")


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=certificate()[0])
    return ctx


class ImaplibTests(unittest.TestCase):
    """imaplib over IMAPS and over STARTTLS."""

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)

    def test_imaps_session(self) -> Any:
        """A full imaplib session over implicit TLS: login, append (no flags), select, fetch, search, logout."""
        port = self.server.tls_port

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_context())
            out["login"] = c.login("alice", PASSWORD)[0]
            out["append"] = c.append("INBOX", None, None, MESSAGE)
            out["select"] = c.select("INBOX")
            out["fetch"] = c.fetch("1", "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
            out["search"] = c.search("UTF-8", "SUBJECT", "café".encode())
            out["logout"] = c.logout()[0]
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["login"], "OK")
            self.assertEqual(out["append"][0], "OK")
            self.assertIn(b"APPENDUID", out["append"][1][0])
            self.assertEqual(out["select"], ("OK", [b"1"]))
            typ, data = out["fetch"]
            self.assertEqual(typ, "OK")
            self.assertEqual(data[0][1], MESSAGE)
            self.assertEqual(out["search"], ("OK", [b"1"]))
            self.assertEqual(out["logout"], "BYE")

        return deferToThread(run).addCallback(check)

    def test_starttls_then_login(self) -> Any:
        """imaplib starttls() on the plain port, then LOGIN works; before it LOGIN is refused."""
        port = self.server.plain_port

        def run() -> tuple[Any, Any, Any]:
            c = imaplib.IMAP4("127.0.0.1", port)
            before = c.capabilities
            try:
                c.login("alice", PASSWORD)
                refused = None
            except imaplib.IMAP4.error as e:
                refused = str(e)
            c.starttls(ssl_context=client_context())
            after = c.capabilities
            ok = c.login("alice", PASSWORD)[0]
            c.logout()
            return before, refused, (after, ok)

        def check(res: tuple[Any, Any, Any]) -> None:
            before, refused, (after, ok) = res
            self.assertIn("LOGINDISABLED", before)
            self.assertIn("STARTTLS", before)
            self.assertFalse(any(c.startswith("AUTH=") for c in before))
            self.assertIn("PRIVACYREQUIRED", refused)
            self.assertIn("AUTH=PLAIN", after)
            self.assertNotIn("STARTTLS", after)
            self.assertEqual(ok, "OK")

        return deferToThread(run).addCallback(check)


class ImapclientTests(unittest.TestCase):
    """imapclient exercises UTF-8 SEARCH literals, MOVE, UIDPLUS and IDLE."""

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)

    def test_folder_workflow(self) -> Any:
        """Create, append with flags and date, search with a UTF-8 literal, move, idle, expunge."""
        import datetime

        from imapclient import IMAPClient
        port = self.server.tls_port

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with IMAPClient("127.0.0.1", port, ssl=True, ssl_context=client_context()) as c:
                c.login("alice", PASSWORD)
                c.create_folder("Projekt/Über")
                out["folders"] = [f[2] for f in c.list_folders()]
                when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
                c.append("INBOX", MESSAGE, flags=[b"\\Flagged", b"$Label1"], msg_time=when)
                c.append("INBOX", b"Subject: second\r\n\r\nplain\r\n")
                c.select_folder("INBOX")
                out["search"] = c.search(["SUBJECT", "café"], charset="UTF-8")
                out["flagged"] = c.search(["FLAGGED"])
                out["fetch"] = c.fetch([1], ["INTERNALDATE", "FLAGS", "ENVELOPE", "BODYSTRUCTURE"])
                out["move"] = c.move([2], "Projekt/Über")
                c.idle()
                blockingCallFromThread(_reactor, self.server.store.account("alice").append, "INBOX",
                                       b"Subject: pushed\r\n\r\nx\r\n")
                out["idle"] = c.idle_check(timeout=10)
                c.idle_done()
                out["status"] = c.folder_status("Projekt/Über", ["MESSAGES", "UIDNEXT"])
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertIn("Projekt/Über", out["folders"])
            self.assertEqual(out["search"], [1])
            self.assertEqual(out["flagged"], [1])
            msg = out["fetch"][1]
            self.assertEqual(msg[b"INTERNALDATE"].replace(tzinfo=None), __import__("datetime").datetime(2026, 1, 2, 3, 4, 5))
            self.assertIn(b"$Label1", msg[b"FLAGS"])
            self.assertEqual(msg[b"ENVELOPE"].subject, "café 8-bit".encode())
            self.assertIn((2, b"EXISTS"), out["idle"])
            self.assertEqual(out["status"][b"MESSAGES"], 1)

        return deferToThread(run).addCallback(check)


class CurlTests(unittest.TestCase):
    """curl imaps:// lists, fetches and appends."""

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)
        self.server.store.account("alice").append("INBOX", MESSAGE)

    def _curl(self, *args: str) -> Any:
        cmd = ["curl", "-sS", "--cacert", certificate()[0], "-u", "alice:" + PASSWORD, *args]
        return deferToThread(subprocess.run, cmd, capture_output=True, timeout=30)

    def test_curl_fetch(self) -> Any:
        """curl imaps://127.0.0.1:PORT/INBOX;UID=1 prints the message byte for byte."""
        url = "imaps://127.0.0.1:%d/INBOX;UID=1" % self.server.tls_port

        def check(res: Any) -> None:
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(res.stdout, MESSAGE)

        return self._curl(url).addCallback(check)

    def test_curl_upload_search_section(self) -> Any:
        """curl -T appends; URL SEARCH finds it; ;SECTION=TEXT returns the body only."""
        import os
        import tempfile
        fd, path = tempfile.mkstemp(suffix=".eml")
        os.write(fd, b"Subject: uploaded by curl\r\n\r\nvia curl\r\n")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        base = "imaps://127.0.0.1:%d/" % self.server.tls_port

        def uploaded(res: Any) -> Any:
            self.assertEqual(res.returncode, 0, res.stderr)
            return self._curl(base + "Sent?SUBJECT%20curl")

        def searched(res: Any) -> Any:
            self.assertEqual(res.stdout, b"* SEARCH 1\r\n")
            return self._curl(base + "Sent;UID=1/;SECTION=TEXT")

        def section(res: Any) -> None:
            self.assertEqual(res.stdout, b"via curl\r\n")

        return self._curl("-T", path, base + "Sent").addCallback(uploaded).addCallback(searched).addCallback(section)

    def test_curl_starttls_list(self) -> Any:
        """curl --ssl-reqd on the plain port upgrades with STARTTLS and lists the folders."""
        url = "imap://127.0.0.1:%d/" % self.server.plain_port

        def check(res: Any) -> None:
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn(b'"/" INBOX', res.stdout)
            self.assertIn(b"\\Sent", res.stdout)

        return self._curl("--ssl-reqd", url).addCallback(check)


class CurlNTLMTests(unittest.TestCase):
    """curl --login-options AUTH=NTLM: one-line Type 2 challenge, over TLS and on an NTLM-only plain server."""

    def _server(self, require_tls: bool, mechanisms: tuple[str, ...]) -> LiveServer:
        from mailgw.auth.md4 import nt_hash
        from mailgw.auth.ntlm import DirectoryNTLMVerifier, NTLMAcceptor
        from mailgw.auth.memory import MemoryDirectory
        from mailgw.auth.service import AuthService, ListenerPolicy
        directory = MemoryDirectory()
        directory.add_user("alice", PASSWORD, ["alice@example.test"], nt_hash=nt_hash(PASSWORD))
        auth = AuthService([directory], _reactor, failure_delay=0,
                           ntlm=NTLMAcceptor(DirectoryNTLMVerifier([directory]), domain="MAILGW"),
                           listeners={"live": ListenerPolicy(mechanisms, require_tls)})
        server = LiveServer(_reactor, require_tls=require_tls, mechanisms=mechanisms, auth=auth)
        self.addCleanup(server.stop)
        server.store.account("alice").append("INBOX", MESSAGE)
        return server

    def _curl(self, url: str, password: str = PASSWORD) -> Any:
        cmd = ["curl", "-sS", "--cacert", certificate()[0], "--login-options", "AUTH=NTLM",
               "-u", "alice:" + password, url]
        return deferToThread(subprocess.run, cmd, capture_output=True, timeout=30)

    def test_ntlm_over_imaps(self) -> Any:
        """NTLM over implicit TLS fetches the message; a wrong password exits 67."""
        server = self._server(True, ("PLAIN", "LOGIN", "NTLM"))
        url = "imaps://127.0.0.1:%d/INBOX;UID=1" % server.tls_port

        def ok(res: Any) -> Any:
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(res.stdout, MESSAGE)
            return self._curl(url, "wrong")

        def denied(res: Any) -> None:
            self.assertEqual(res.returncode, 67, res.stderr)

        return self._curl(url).addCallback(ok).addCallback(denied)

    def test_ntlm_only_plain_server(self) -> Any:
        """The non-encrypted NTLM-only server authenticates curl without TLS."""
        server = self._server(False, ("NTLM",))
        url = "imap://127.0.0.1:%d/INBOX;UID=1" % server.plain_port

        def ok(res: Any) -> None:
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(res.stdout, MESSAGE)

        return self._curl(url).addCallback(ok)


class ImapclientBreadthTests(unittest.TestCase):
    """Many imapclient calls in one session, each checked against what the server should answer."""

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)

    def test_breadth(self) -> Any:
        """namespace, id, folder ops, flags, copy, uid expunge, header fetch, date search, unselect, status."""
        import datetime

        from imapclient import IMAPClient
        port = self.server.tls_port

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with IMAPClient("127.0.0.1", port, ssl=True, ssl_context=client_context()) as c:
                out["caps_pre"] = c.capabilities()
                c.login("alice", PASSWORD)
                out["namespace"] = c.namespace()
                out["id"] = c.id_({"name": "test"})
                out["exists"] = (c.folder_exists("INBOX"), c.folder_exists("Nope"))
                c.create_folder("A")
                c.create_folder("A/B")
                c.rename_folder("A", "C")
                out["subfolders"] = [f[2] for f in c.list_folders("C/")]
                c.subscribe_folder("C")
                out["lsub"] = [f[2] for f in c.list_sub_folders()]
                c.delete_folder("C/B")
                for i in range(3):
                    c.append("INBOX", b"From: a@b.test\r\nSubject: n%d\r\nDate: Mon, 0%d Jan 2026 10:00:00 +0000\r\n\r\nx\r\n"
                             % (i, i + 1))
                out["select"] = c.select_folder("INBOX")
                out["add"] = c.add_flags([1, 2], [b"\\Flagged", b"Work"])
                out["remove"] = c.remove_flags([2], [b"Work"])
                out["get"] = c.get_flags([1, 2, 3])
                out["since"] = c.search(["SENTSINCE", datetime.date(2026, 1, 2)])
                out["headers"] = c.fetch([3], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
                out["copy"] = c.copy([1, 2], "Archive")
                c.set_flags([1], [b"\\Deleted"])
                out["uid_expunge"] = c.uid_expunge([1])
                out["after"] = c.search()
                c.unselect_folder()
                out["status"] = c.folder_status("Archive", ["MESSAGES", "UNSEEN"])
                out["examine"] = b"READ-ONLY" in c.select_folder("Archive", readonly=True)
                out["noop"] = c.noop()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertIn(b"AUTH=PLAIN", out["caps_pre"])
            self.assertEqual(out["namespace"].personal, (("", "/"),))
            self.assertEqual(dict(out["id"]), {b"name": b"mailgw"})
            self.assertEqual(out["exists"], (True, False))
            self.assertEqual(out["subfolders"], ["C/B"])
            self.assertIn("C", out["lsub"])
            self.assertEqual(out["select"][b"EXISTS"], 3)
            self.assertEqual(out["select"][b"UIDNEXT"], 4)
            self.assertIn(b"\\Flagged", out["get"][1])
            self.assertNotIn(b"Work", out["get"][2])
            self.assertEqual(out["get"][3], (b"\\Recent",))
            self.assertEqual(out["since"], [2, 3])
            self.assertEqual(out["headers"][3][b"BODY[HEADER.FIELDS (SUBJECT)]"], b"Subject: n2\r\n\r\n")
            self.assertEqual(out["after"], [2, 3])
            self.assertEqual(out["status"][b"MESSAGES"], 2)
            self.assertTrue(out["examine"])

        return deferToThread(run).addCallback(check)


class MaildirStoreTests(unittest.TestCase):
    """The same client workflows over the Maildir store, whose Deferreds fire later from its thread pool."""

    def setUp(self) -> None:
        import tempfile

        from twisted.python.threadpool import ThreadPool

        from mailgw.store.maildir.account import MaildirStore
        self.pool = ThreadPool(1, 4, "imap-test-disk")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        import shutil
        root = tempfile.mkdtemp(prefix="mailgw-imap-maildir-")
        self.addCleanup(shutil.rmtree, root, True)
        self.store = MaildirStore(root + "/{user}", _reactor, self.pool, poll_interval=0.2)
        self.addCleanup(self.store.close)
        self.server = LiveServer(_reactor, store=self.store)
        self.addCleanup(self.server.stop)

    def test_workflow(self) -> Any:
        """Append, select, fetch, search, store, copy, move, expunge, IDLE push from a delivery."""
        from imapclient import IMAPClient
        port = self.server.tls_port

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with IMAPClient("127.0.0.1", port, ssl=True, ssl_context=client_context()) as c:
                c.login("alice", PASSWORD)
                for i in range(5):
                    c.append("INBOX", MESSAGE.replace(b"8-bit", b"n%d" % i))
                out["select"] = c.select_folder("INBOX")
                out["fetch"] = c.fetch([1, 2, 3, 4, 5], ["UID", "FLAGS", "RFC822.SIZE", "ENVELOPE", "BODY[]"])
                out["search"] = c.search(["SUBJECT", "n3"])
                c.add_flags([1], [b"\\Deleted"])
                out["expunge"] = c.expunge()
                out["copy"] = c.copy([2], "Archive")
                out["move"] = c.move([3], "Trash")
                c.idle()
                blockingCallFromThread(_reactor, self.store.deliver, "alice", b"Subject: pushed\r\n\r\nx\r\n")
                out["idle"] = c.idle_check(timeout=10)
                c.idle_done()
                out["status"] = c.folder_status("Trash", ["MESSAGES"])
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["select"][b"EXISTS"], 5)
            self.assertEqual(len(out["fetch"]), 5)
            self.assertEqual(out["fetch"][1][b"BODY[]"], MESSAGE.replace(b"8-bit", b"n0"))
            self.assertIn(b"\\Seen", out["fetch"][1][b"FLAGS"])
            self.assertEqual(out["search"], [4])
            self.assertEqual(out["status"][b"MESSAGES"], 1)
            self.assertTrue(any(r[1] == b"EXISTS" for r in out["idle"]), out["idle"])

        return deferToThread(run).addCallback(check)
