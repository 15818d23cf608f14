"""Per-connection bounds on a real listener: a client that never reads its replies, oversized headers."""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.smtp.smtp_support import RawSMTP, SubmissionHarness

PW = SubmissionHarness.PASSWORD


def pending_output(session: Any) -> int:
    """Reply bytes the server holds for this (plain TCP) connection, not yet taken by the kernel."""
    t = session.transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen


def input_held(session: Any) -> int:
    """Pipelined input the session holds, not yet run."""
    return session.framer.buffered


class NonReadingClientTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    async def until(self, cond: Any, limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        while not cond():
            if time.monotonic() > deadline:
                self.fail("condition not reached")
            await deferLater(reactor, 0.01, lambda: None)

    async def test_pipelined_ehlo_without_reading(self) -> None:
        """A client pipelining 2 MB of EHLO and never reading holds < 1 MiB in the server; others get NOOP in < 1 s."""
        attacker = socket.socket()
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuning: the test is deterministic
        attacker.connect(("127.0.0.1", self.h.plain))
        self.addCleanup(attacker.close)
        attacker.settimeout(10)
        lines = 256 * 1024
        sent = threading.Event()

        def flood() -> None:
            try:
                attacker.sendall(b"EHLO x\r\n" * lines)
            except OSError:
                pass
            sent.set()

        threading.Thread(target=flood, daemon=True).start()
        await self.until(lambda: len(self.h.factory.sessions) == 1)
        session = next(iter(self.h.factory.sessions))
        peak = [0, 0]

        def stopped() -> bool:
            peak[0] = max(peak[0], pending_output(session))
            peak[1] = max(peak[1], input_held(session))
            reading_paused = getattr(getattr(session, "flow", None), "read_paused", False)
            return reading_paused or peak[0] > 8 * 1024 * 1024

        await self.until(stopped)
        for _ in range(20):  # it stays stopped: nothing more is read or produced
            await deferLater(reactor, 0.01, lambda: None)
            stopped()
        self.assertLess(peak[0], 1024 * 1024, "reply bytes buffered for a client that does not read")
        self.assertLess(peak[1], 256 * 1024, "pipelined input buffered")

        def noop() -> float:
            start = time.monotonic()
            c = RawSMTP(self.h.plain, timeout=5)
            code, _ = c.cmd("NOOP")
            c.close()
            assert code == 250
            return time.monotonic() - start
        self.assertLess(await deferToThread(noop), 1.0)

        def drain() -> int:
            """Now read everything: every pipelined EHLO is answered, in order, none lost."""
            buf, finals = b"", 0
            attacker.settimeout(10)
            while finals < lines:
                chunk = attacker.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                cut = buf.rfind(b"\r\n") + 2
                finals += buf[:cut].count(b"\r\n250 SMTPUTF8\r\n")
                buf = buf[cut - 2 :]
            return finals
        self.assertEqual(await deferToThread(drain), lines)


class HeaderLimitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    def ctx(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.h.certs["ca"])

    async def test_from_after_junk_headers_refused(self) -> None:
        """A spoofed From: after 1,400 junk header lines (> 256 KiB) gets 552 5.3.4, nothing stored, session kept."""
        junk = b"".join(b"X-Junk-%04d: " % i + b"j" * 180 + b"\r\n" for i in range(1400))
        assert len(junk) > self.h.policy.max_header_bytes
        spoof = junk + b"From: ceo@bank.example\r\nTo: bob@example.test\r\nSubject: pay\r\n\r\nbody\r\n"

        def run() -> tuple[Any, Any]:
            with smtplib.SMTP("127.0.0.1", self.h.plain, timeout=10) as s:
                s.starttls(context=self.ctx())
                s.login("alice", PW)
                try:
                    s.sendmail("alice@example.test", ["bob@example.test", "far@remote.example"], spoof)
                    first: Any = "accepted"
                except smtplib.SMTPDataError as e:
                    first = (e.smtp_code, e.smtp_error.decode())
                # the connection stays usable: an ordinary message goes through on it
                ok = s.sendmail("alice@example.test", ["bob@example.test"],
                                b"From: alice@example.test\r\nSubject: ok\r\n\r\nfine\r\n")
                return first, ok
        first, ok = await deferToThread(run)
        self.assertEqual(first, (552, "5.3.4 Message header size exceeds limit"))
        self.assertEqual(ok, {})
        inbox = self.h.inbox("bob")
        self.assertEqual(len(inbox), 1)
        self.assertIn(b"Subject: ok", inbox[0])
        self.assertEqual(self.h.queue.entries(), [])

    async def test_header_just_under_limit_checked(self) -> None:
        """A From: after junk that keeps the header under the limit is still checked: 553 5.7.1."""
        junk = b"".join(b"X-Junk-%04d: " % i + b"j" * 180 + b"\r\n" for i in range(1000))
        assert len(junk) < self.h.policy.max_header_bytes
        spoof = junk + b"From: ceo@bank.example\r\n\r\nbody\r\n"

        def run() -> Any:
            with smtplib.SMTP("127.0.0.1", self.h.plain, timeout=10) as s:
                s.starttls(context=self.ctx())
                s.login("alice", PW)
                try:
                    s.sendmail("alice@example.test", ["bob@example.test"], spoof)
                except smtplib.SMTPDataError as e:
                    return e.smtp_code, e.smtp_error.decode()
                return "accepted"
        code, text = await deferToThread(run)
        self.assertEqual(code, 553)
        self.assertIn("<ceo@bank.example>: Sender address rejected", text)
        self.assertEqual(self.h.inbox("bob"), [])
