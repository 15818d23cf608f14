"""Issue 12 attacks on a real IMAP server process: a second connection's NOOP stays under 1 s, memory stays bounded."""

from __future__ import annotations

import imaplib
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable

from twisted.trial import unittest

from tests.imap.imap_child_server import ChildServer
from tests.imap.imap_live import PASSWORD, certificate

STRAY_PAREN = (b"From: Mallory <mallory@example.test>\r\nTo: alice@example.test\r\nCc: a) b\r\n"
               b"Subject: stray paren\r\n\r\nhello\r\n")
ATTACHED = (b"From: m@example.test\r\nTo: alice@example.test\r\nSubject: fwd\r\n"
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--zz\r\nContent-Type: message/rfc822\r\n\r\n" + STRAY_PAREN + b"\r\n--zz--\r\n")


def _context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificate()[0])


class HostileClientTests(unittest.TestCase):
    """Each attack runs on one connection while another connection's NOOP is timed."""

    def setUp(self) -> None:
        self.server = ChildServer("--preauth-timeout", "2")
        self.addCleanup(self.server.stop)

    def login(self) -> imaplib.IMAP4_SSL:
        c = imaplib.IMAP4_SSL("127.0.0.1", self.server.tls_port, ssl_context=_context(), timeout=15)
        c.login("alice", PASSWORD)
        self.addCleanup(c.shutdown)
        return c

    def command(self, c: imaplib.IMAP4_SSL, line: bytes) -> Callable[[], bytes]:
        """Send `x1 <line>` with imaplib's own transport; the returned call reads up to the tagged reply."""
        c.send(b"x1 " + line + b"\r\n")

        def read() -> bytes:
            out = b""
            while True:
                got = c.readline()
                if not got:
                    return out
                out += got
                if got.startswith(b"x1 "):
                    return out
        return read

    def noop_while(self, c: imaplib.IMAP4_SSL, line: bytes) -> tuple[bytes, float]:
        """Send `line` on `c`, time a NOOP on a second logged-in connection, then collect `line`'s reply."""
        other = self.login()
        read = self.command(c, line)
        box: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: box.update(out=read()), daemon=True)
        reader.start()
        t0 = time.monotonic()
        self.assertEqual(other.noop()[0], "OK")
        latency = time.monotonic() - t0
        reader.join(30)
        self.assertFalse(reader.is_alive(), "no tagged reply to " + line[:40].decode())
        return box["out"], latency

    def test_stray_paren_envelope(self) -> None:
        """`Cc: a) b` (alone and inside an attached message/rfc822) fetched as ENVELOPE/BODYSTRUCTURE/BODY: answered, NOOP < 1 s."""
        c = self.login()
        self.assertEqual(c.append("INBOX", None, None, STRAY_PAREN)[0], "OK")
        self.assertEqual(c.append("INBOX", None, None, ATTACHED)[0], "OK")
        c.select("INBOX")
        out, latency = self.noop_while(c, b"FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY)")
        self.assertLess(latency, 1.0)
        self.assertTrue(out.endswith(b"x1 OK Fetch completed.\r\n"), out[-200:])
        self.assertIn(b'(NIL "stray paren" (("Mallory" NIL "mallory" "example.test"))', out)
        self.assertIn(b'((NIL NIL "ab" "MISSING_DOMAIN"))', out)
        self.assertIn(b'"message" "rfc822"', out)
        typ, data = c.fetch("2", "(ENVELOPE)")  # and imaplib's own FETCH on the same session
        self.assertEqual(typ, "OK")

    def test_zero_length_literal_flood_before_login(self) -> None:
        """`a LOGIN <65,000 x> {0+}` x 2,000 before login: closed after a few lines, RSS grows < 20 MB, NOOP < 1 s.

        The server answers `* BYE Command too long` (the offline test pins the bytes); here the client may
        see a reset instead, since it is still sending when the server closes.
        """
        base = self.server.rss()
        other = self.login()
        raw = socket.create_connection(("127.0.0.1", self.server.plain_port), timeout=15)
        self.addCleanup(raw.close)
        raw.recv(4096)
        line = b"a LOGIN " + b"x" * 65000 + b" {0+}\r\n"
        reply = b""
        sent = 0
        closed = False
        try:
            while sent < 2000 and b"\r\n" not in reply:
                raw.sendall(line)
                sent += 1
                if select.select([raw], [], [], 0)[0]:
                    reply += raw.recv(4096)
            while not closed:
                chunk = raw.recv(4096)
                reply += chunk
                closed = not chunk
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        t0 = time.monotonic()
        self.assertEqual(other.noop()[0], "OK")
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertLess(sent, 100)
        self.assertTrue(closed)
        self.assertIn(reply, (b"* BYE Command too long\r\n", b""))
        self.assertLess(self.server.rss() - base, 20 * 2**20)

    def test_preauth_drip_is_closed_at_the_deadline(self) -> None:
        """One byte every 0.25 s without a line end: closed with BYE at the 2 s pre-auth deadline."""
        raw = socket.create_connection(("127.0.0.1", self.server.plain_port), timeout=15)
        self.addCleanup(raw.close)
        t0 = time.monotonic()
        raw.recv(4096)
        reply = b""
        while time.monotonic() - t0 < 8:
            if select.select([raw], [], [], 0.25)[0]:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                reply += chunk
                continue
            raw.sendall(b"x")
        elapsed = time.monotonic() - t0
        self.assertEqual(reply, b"* BYE Disconnected for inactivity.\r\n")
        self.assertLess(elapsed, 4.0)

    def test_list_pattern_flood(self) -> None:
        """30 wildcard-heavy patterns over 100 long names: answered (OK, or NO [LIMIT] when too costly), NOOP < 1 s."""
        c = self.login()
        for i in range(100):
            self.assertEqual(c.create("f%03d-%s" % (i, "ab" * 90))[0], "OK")
        short = b"(" + b" ".join(b'"*a*b*a*b*a*b*a*b*a*b*a*b*a*b*a*b*a*b*a*b*a*b*a*b*a*b*a*b*c%d"' % i
                                 for i in range(30)) + b")"
        out, latency = self.noop_while(c, b'LIST "" ' + short)
        self.assertLess(latency, 1.0)
        self.assertEqual(out, b"x1 OK List completed.\r\n")
        long_ = b"(" + b" ".join(b'"' + b"*a" * 15 + b"b" * 400 + b'%d"' % i for i in range(30)) + b")"
        out, latency = self.noop_while(c, b'LIST "" ' + long_)
        self.assertLess(latency, 1.0)
        self.assertEqual(out, b"x1 NO [LIMIT] Too many mailbox patterns for this many mailboxes\r\n")

    def test_search_many_body_keys(self) -> None:
        """450 `NOT BODY x` keys over an 8 MB message: answered, NOOP on another connection < 1 s."""
        c = self.login()
        big = b"Subject: big\r\n\r\n" + (b"lorem ipsum dolor sit amet " * 37 + b"\r\n") * 8000
        self.assertEqual(c.append("INBOX", None, None, big)[0], "OK")
        c.select("INBOX")
        out, latency = self.noop_while(c, b"SEARCH " + b"NOT BODY x " * 450 + b"ALL")
        self.assertLess(latency, 1.0)
        self.assertEqual(out, b"* SEARCH 1\r\nx1 OK Search completed.\r\n")

    def test_long_search_is_paced(self) -> None:
        """A SEARCH that runs for seconds (32 distinct BODY keys over 40 MB) lets another connection's NOOPs through."""
        c = self.login()
        big = b"Subject: big\r\n\r\n" + (b"lorem ipsum dolor sit amet " * 37 + b"\r\n") * 1000
        for _ in range(40):
            self.assertEqual(c.append("INBOX", None, None, big)[0], "OK")
        c.select("INBOX")
        other = self.login()
        read = self.command(c, b"SEARCH " + b" ".join(b"NOT BODY x%d" % i for i in range(32)))
        box: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: box.update(out=read()), daemon=True)
        reader.start()
        latencies = []
        while reader.is_alive() and len(latencies) < 200:
            t0 = time.monotonic()
            self.assertEqual(other.noop()[0], "OK")
            latencies.append(time.monotonic() - t0)
        reader.join(60)
        self.assertTrue(box["out"].endswith(b"x1 OK Search completed.\r\n"))
        self.assertGreater(len(latencies), 3)  # the SEARCH really overlapped the NOOPs
        self.assertLess(max(latencies), 0.5)

