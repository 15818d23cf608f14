"""Session timers on a fake clock: idle timeout, and trickled partial commands do not keep a session open."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService
from mailgw.smtp.factory import SubmissionFactory
from mailgw.smtp.policy import SubmissionPolicy
from mailgw.store.memory import MemoryStore


class TimeoutTests(SynchronousTestCase):
    def session(self) -> tuple[Clock, StringTransport, Any]:
        clock = Clock()
        auth = AuthService([MemoryDirectory()], clock, failure_delay=0)
        factory = SubmissionFactory("t", auth, MemoryStore(), None, None, "mx.example.test",  # type: ignore[arg-type]
                                    SubmissionPolicy(idle_timeout=300), clock, None)  # type: ignore[arg-type]
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return clock, transport, proto

    def test_idle_timeout(self) -> None:
        """Five idle minutes after a command get 421 4.4.2 and a close."""
        clock, t, proto = self.session()
        proto.dataReceived(b"NOOP\r\n")
        clock.advance(299)
        self.assertFalse(t.disconnecting)
        clock.advance(2)
        self.assertTrue(t.value().endswith(b"421 4.4.2 mx.example.test Error: timeout exceeded\r\n"))
        self.assertTrue(t.disconnecting)

    def test_trickle(self) -> None:
        """A command trickled one byte a minute is cut off at the idle timeout."""
        clock, t, proto = self.session()
        for b in b"NOOP NOOP NOOP":
            proto.dataReceived(bytes([b]))
            clock.advance(60)
            if t.disconnecting:
                break
        self.assertTrue(t.disconnecting)
        self.assertIn(b"421 4.4.2", t.value())
