"""QUIT over TLS on real loopback sockets: the server closes TCP right after its close_notify (issue 18 item 5)."""

from __future__ import annotations

import socket
import ssl
import time

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.smtp.smtp_support import SubmissionHarness
from tests.support.tlsprobe import TLSProbe

BOUND = 1.0  # seconds from QUIT to the server's FIN; before the fix the socket stayed until a 10 s abort


def _quit(probe: TLSProbe) -> tuple[bytes, float]:
    """EHLO, QUIT; (the 221 reply, seconds from QUIT to the TCP close). The probe never sends close_notify."""
    probe.send(b"EHLO client.example\r\n")
    probe.read_until(b"250 ")
    probe.read_until(b"\r\n")
    sent = time.monotonic()
    probe.send(b"QUIT\r\n")
    out = probe.read_until(b"\r\n")
    closed = probe.wait_tcp_close(3 * BOUND)
    assert probe.close_notify, "no close_notify from the server"
    return out, (closed - sent) if closed is not None else float("inf")


class QuitCloseTests(TestCase):
    """The submission server does not wait for the client's close_notify before closing the connection."""

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    def ctx(self) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=self.h.certs["ca"])
        c.check_hostname = False
        return c

    def check(self, result: tuple[bytes, float]) -> None:
        out, elapsed = result
        self.assertEqual(out, b"221 2.0.0 Bye\r\n")
        self.assertLess(elapsed, BOUND)

    def test_implicit_tls_quit_closes_at_once(self) -> None:
        """On the implicit-TLS port, the FIN follows 221 and close_notify within a second."""
        port = self.h.implicit

        def run() -> tuple[bytes, float]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            probe = TLSProbe(raw, self.ctx())
            probe.read_until(b"\r\n")
            return _quit(probe)

        return deferToThread(run).addCallback(self.check)

    def test_starttls_quit_closes_at_once(self) -> None:
        """After STARTTLS, the FIN follows 221 and close_notify within a second."""
        port = self.h.plain

        def run() -> tuple[bytes, float]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO client.example\r\n")
            while f.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\n")
            reply = f.readline()
            assert reply.startswith(b"220"), reply
            return _quit(TLSProbe(raw, self.ctx()))

        return deferToThread(run).addCallback(self.check)
