"""Attacks on the submission server: STARTTLS injection, bare LF/CR and long-line smuggling, floods, open relay."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.smtp.smtp_support import RawSMTP, SubmissionHarness

PW = SubmissionHarness.PASSWORD


def plain(user: str = "alice", pw: str = PW) -> str:
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


class SmugglingTests(TestCase):
    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    def session(self) -> RawSMTP:
        c = RawSMTP(self.h.implicit, implicit=True)
        c.cmd("EHLO c.example")
        c.login()
        return c

    def nothing_stored(self) -> None:
        self.assertEqual(self.h.queue.entries(), [])
        self.assertEqual(self.h.inbox("bob"), [])

    async def test_starttls_injection(self) -> None:
        """Commands pipelined behind STARTTLS are never answered, and nothing learnt before TLS survives."""
        def run() -> list[Any]:
            c = RawSMTP(self.h.plain)
            c.cmd("EHLO c.example")
            c.send(b"STARTTLS\r\nRSET\r\nEHLO evil\r\nAUTH PLAIN " + plain().encode() + b"\r\n"
                   b"MAIL FROM:<alice@example.test>\r\n")
            first = c.reply()
            leftover = c.buf
            c.sock = c.ctx.wrap_socket(c.sock, server_hostname="localhost")
            out = [first, leftover, c.cmd("MAIL FROM:<alice@example.test>"), c.cmd("EHLO c.example"),
                   c.cmd("MAIL FROM:<alice@example.test>"), c.cmd("NOOP")]
            return out
        r = await deferToThread(run)
        self.assertEqual(r[0], (220, "220 2.0.0 Ready to start TLS"))
        self.assertEqual(r[1], b"")
        self.assertEqual(r[2], (503, "503 5.5.1 Error: send HELO/EHLO first"))
        self.assertEqual(r[4], (530, "530 5.7.0 Authentication required"))  # the injected AUTH never ran
        self.assertEqual(r[5][0], 250)

    async def test_starttls_injection_byte_at_a_time(self) -> None:
        """The handshake works when the client sends the STARTTLS line one byte at a time."""
        def run() -> Any:
            c = RawSMTP(self.h.plain)
            c.cmd("EHLO c.example")
            for b in b"STARTTLS\r\n":
                c.send(bytes([b]))
            assert c.reply()[0] == 220
            c.sock = c.ctx.wrap_socket(c.sock, server_hostname="localhost")
            return c.cmd("EHLO c.example")
        code, text = await deferToThread(run)
        self.assertIn("AUTH", text)

    async def test_bare_lf_variants(self) -> None:
        """Every bare LF / CR variant in DATA gets 550 5.5.2 and a close; the smuggled message is not stored."""
        variants = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"]

        def run(v: bytes) -> Any:
            c = self.session()
            c.cmd("MAIL FROM:<alice@example.test>")
            c.cmd("RCPT TO:<bob@example.test>")
            assert c.cmd("DATA")[0] == 354
            c.send(b"Subject: one\r\n\r\nbody" + v + b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                   b"DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\nQUIT\r\n")
            res = c.reply()
            return res, c.eof()
        for v in variants:
            res, eof = await deferToThread(run, v)
            self.assertEqual(res, (550, "550 5.5.2 mx.example.test Error: bare <LF> received"), v)
            self.assertTrue(eof)
        self.nothing_stored()

    async def test_long_line_not_executed(self) -> None:
        """A 20,000-byte DATA line with SMTP after it yields one rejection and no extra 250."""
        def run() -> Any:
            c = self.session()
            c.cmd("MAIL FROM:<alice@example.test>")
            c.cmd("RCPT TO:<bob@example.test>")
            c.cmd("DATA")
            c.send(b"Subject: long\r\n\r\n" + b"A" * 20000 + b"\r\nMAIL FROM:<alice@example.test>\r\n"
                   b"RCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n")
            first = c.reply()
            second = c.cmd("NOOP")
            return first, second
        first, second = await deferToThread(run)
        self.assertEqual(first, (552, "552 5.3.4 Message line too long"))
        self.assertEqual(second, (250, "250 2.0.0 Ok"))
        self.nothing_stored()

    async def test_long_line_accepted_when_configured(self) -> None:
        """With long_lines = accept, the long line is delivered as data, never executed."""
        self.h.set_policy(long_lines="accept")

        def run() -> Any:
            c = self.session()
            c.cmd("MAIL FROM:<alice@example.test>")
            c.cmd("RCPT TO:<bob@example.test>")
            c.cmd("DATA")
            c.send(b"Subject: long\r\n\r\n" + b"A" * 20000 + b"\r\nRSET\r\n.\r\n")
            return c.reply(), c.cmd("NOOP")
        first, second = await deferToThread(run)
        self.assertEqual(first[0], 250)
        inbox = self.h.inbox("bob")
        self.assertEqual(len(inbox), 1)
        self.assertTrue(inbox[0].endswith(b"A" * 20000 + b"\r\nRSET\r\n"))

    async def test_command_line_limits(self) -> None:
        """A 3000-byte command gets 500 and the session stays; 70 KiB without CRLF gets 421 and a close."""
        def run() -> Any:
            c = RawSMTP(self.h.plain)
            a = c.cmd(b"NOOP " + b"x" * 3000)
            b = c.cmd(b"NOOP")
            c.send(b"y" * (70 * 1024))
            d = c.reply()
            return a, b, d, c.eof()
        a, b, d, eof = await deferToThread(run)
        self.assertEqual(a, (500, "500 5.5.2 Error: Line too long"))
        self.assertEqual(b[0], 250)
        self.assertEqual(d, (421, "421 4.7.0 mx.example.test Error: Line too long, closing"))
        self.assertTrue(eof)

    async def test_open_relay_refused(self) -> None:
        """Without AUTH no address trick gets a 250 to RCPT; after AUTH the tricks are syntax errors."""
        tricks = ["b%remote.example@example.test", "@example.test:b@remote.example", '"b@remote.example"@example.test',
                  "b@remote.example@example.test", "remote.example!b@example.test", "b@[192.0.2.9]", "b@example.test."]

        def run() -> Any:
            c = RawSMTP(self.h.plain)
            c.cmd("EHLO c.example")
            c.starttls()
            c.cmd("EHLO c.example")
            unauth = [c.cmd("MAIL FROM:<x@remote.example>")] + [c.cmd(f"RCPT TO:<{t}>") for t in tricks]
            c.login()
            c.cmd("MAIL FROM:<alice@example.test>")
            authed = [c.cmd(f"RCPT TO:<{t}>") for t in tricks]
            return unauth, authed
        unauth, authed = await deferToThread(run)
        self.assertEqual(unauth[0], (530, "530 5.7.0 Authentication required"))
        for code, text in unauth[1:]:
            self.assertEqual(code, 503, text)
        for code, text in authed:
            self.assertEqual(code, 501, text)
        self.nothing_stored()

    async def test_auth_errors(self) -> None:
        """Malformed AUTH gets 501 and the connection stays; a wrong password 535; three failures close."""
        def run() -> Any:
            c = RawSMTP(self.h.implicit, implicit=True)
            c.cmd("EHLO c.example")
            out = [c.cmd("AUTH"), c.cmd("AUTH PLAIN !!!notbase64"), c.cmd("AUTH BOGUS"), c.cmd("AUTH PLAIN"),
                   c.cmd("*"), c.cmd("NOOP"), c.cmd("AUTH PLAIN " + plain(pw="wrong")),
                   c.cmd("AUTH LOGIN"), c.cmd(base64.b64encode(b"alice").decode()), c.cmd("%%%")]
            out.append(c.cmd("AUTH PLAIN " + plain(pw="wrong2")))
            return out, c.eof()
        out, eof = await deferToThread(run)
        self.assertEqual(out[0][0], 501)
        self.assertEqual(out[1], (501, "501 5.5.2 Cannot Base64-decode Client responses"))
        self.assertEqual(out[2], (504, "504 5.5.4 Unrecognized authentication type"))
        self.assertEqual(out[3], (334, "334 "))
        self.assertEqual(out[4], (501, "501 5.0.0 Authentication aborted"))
        self.assertEqual(out[5][0], 250)
        self.assertEqual(out[6], (535, "535 5.7.8 Authentication credentials invalid"))
        self.assertEqual(out[7], (334, "334 VXNlcm5hbWU6"))
        self.assertEqual(out[8], (334, "334 UGFzc3dvcmQ6"))
        self.assertEqual(out[9], (501, "501 5.5.2 Cannot Base64-decode Client responses"))
        self.assertEqual(out[10], (421, "421 4.7.0 mx.example.test Error: too many errors"))
        self.assertTrue(eof)


class ClientHelloSegmentTests(TestCase):
    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    async def test_clienthello_in_starttls_segment(self) -> None:
        """A ClientHello sent in the same segment as STARTTLS still completes the handshake."""
        def run() -> Any:
            import ssl

            c = RawSMTP(self.h.plain)
            c.cmd("EHLO c.example")
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = c.ctx.wrap_bio(inc, out, server_hostname="localhost")
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            c.send(b"STARTTLS\r\n" + out.read())
            assert c.reply()[0] == 220
            data = c.buf
            while True:
                try:
                    if data:
                        inc.write(data)
                        data = b""
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if out.pending:
                        c.send(out.read())
                    data = c.sock.recv(65536)
                    if not data:
                        raise EOFError
            if out.pending:
                c.send(out.read())
            obj.write(b"EHLO c.example\r\n")
            c.send(out.read())
            reply = b""
            while b"\r\n250 " not in reply:
                inc.write(c.sock.recv(65536))
                try:
                    reply += obj.read()
                except ssl.SSLWantReadError:
                    pass
            return reply.decode()
        text = await deferToThread(run)
        self.assertIn("AUTH PLAIN", text)
