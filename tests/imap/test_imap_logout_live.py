"""LOGOUT over TLS on real loopback sockets: the server closes TCP right after its close_notify (issue 18 item 5)."""

from __future__ import annotations

import socket
import ssl
import time

from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.imap.imap_live import PASSWORD, LiveServer, certificate
from tests.support.tlsprobe import TLSProbe

BOUND = 1.0  # seconds from LOGOUT to the server's FIN; before the fix the socket stayed until a 10 s abort


def _ctx() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificate()[0])


def _logout(probe: TLSProbe) -> tuple[bytes, float]:
    """LOGIN, LOGOUT; (the replies, seconds from LOGOUT to the TCP close). The probe never sends close_notify."""
    probe.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n")
    probe.read_until(b"a OK")
    probe.read_until(b"\r\n")
    sent = time.monotonic()
    probe.send(b"b LOGOUT\r\n")
    out = probe.read_until(b"b OK Logout completed.\r\n")
    closed = probe.wait_tcp_close(3 * BOUND)
    assert probe.close_notify, "no close_notify from the server"
    return out, (closed - sent) if closed is not None else float("inf")


class LogoutCloseTests(unittest.TestCase):
    """The server does not wait for the client's close_notify before closing the connection."""

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)

    def check(self, result: tuple[bytes, float]) -> None:
        out, elapsed = result
        self.assertEqual(out, b"* BYE Logging out\r\nb OK Logout completed.\r\n")
        self.assertLess(elapsed, BOUND)

    def test_implicit_tls_logout_closes_at_once(self) -> None:
        """On the implicit-TLS port, the FIN follows BYE/OK and close_notify within a second."""
        port = self.server.tls_port

        def run() -> tuple[bytes, float]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            probe = TLSProbe(raw, _ctx())
            probe.read_until(b"\r\n")
            return _logout(probe)

        return deferToThread(run).addCallback(self.check)

    def test_starttls_logout_closes_at_once(self) -> None:
        """After STARTTLS, the FIN follows BYE/OK and close_notify within a second."""
        port = self.server.plain_port

        def run() -> tuple[bytes, float]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            greeting = b""
            while not greeting.endswith(b"\r\n"):
                greeting += raw.recv(1)
            raw.sendall(b"s STARTTLS\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += raw.recv(1)
            assert reply.startswith(b"s OK"), reply
            return _logout(TLSProbe(raw, _ctx()))

        return deferToThread(run).addCallback(self.check)


