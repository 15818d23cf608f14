"""close_transport offline: over Twisted's TLS layer the socket below is closed right after our close_notify."""

from __future__ import annotations

import ssl
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from mailgw.net.closing import close_transport
from tests.imap.imap_live import FileTLS, certificate


class _Client:
    """A stdlib TLS client whose records are carried by hand to and from a server-side StringTransport."""

    def __init__(self) -> None:
        ctx = ssl.create_default_context(cafile=certificate()[0])
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self, server: Any, lower: StringTransport) -> None:
        for _ in range(10):
            try:
                self.obj.do_handshake()
                server.dataReceived(self.outgoing.read())  # the client's Finished (TLS 1.3)
                self.incoming.write(lower.value())
                lower.clear()
                return
            except ssl.SSLWantReadError:
                server.dataReceived(self.outgoing.read())
                self.incoming.write(lower.value())
                lower.clear()
        raise AssertionError("no handshake")

    def read_all(self, lower: StringTransport) -> tuple[bytes, bool]:
        """(plaintext, close_notify seen) from what the server wrote."""
        self.incoming.write(lower.value())
        lower.clear()
        out = b""
        while True:
            try:
                chunk = self.obj.read()
            except ssl.SSLWantReadError:
                return out, False
            except ssl.SSLZeroReturnError:
                return out, True
            if not chunk:
                return out, True
            out += chunk


def _tls_pair() -> tuple[Any, StringTransport, _Client]:
    """A TLSMemoryBIOProtocol (as an implicit-TLS listener builds it) on a StringTransport, handshaken."""
    factory = TLSMemoryBIOFactory(FileTLS().context_factory(), False, Factory.forProtocol(Protocol))
    server = factory.buildProtocol(None)
    lower = StringTransport()
    server.makeConnection(lower)
    client = _Client()
    client.handshake(server, lower)
    return server, lower, client


class CloseTransportTests(SynchronousTestCase):
    """What the socket below the TLS layer sees when a session ends."""

    def test_tls_closes_the_lower_transport_after_close_notify(self) -> None:
        """The last reply and the close_notify are written, and the TCP transport is told to close at once."""
        server, lower, client = _tls_pair()
        server.write(b"* BYE Logging out\r\n")
        close_transport(server)
        self.assertTrue(lower.disconnecting)
        self.assertEqual(client.read_all(lower), (b"* BYE Logging out\r\n", True))

    def test_plain_loseconnection_waits_for_the_peer(self) -> None:
        """Twisted's own loseConnection leaves the TCP transport open until the peer's close_notify (the defect)."""
        server, lower, client = _tls_pair()
        server.loseConnection()
        self.assertFalse(lower.disconnecting)
        self.assertEqual(client.read_all(lower), (b"", True))

    def test_cleartext_transport(self) -> None:
        """Without TLS it is a plain loseConnection."""
        lower = StringTransport()
        close_transport(lower)
        self.assertTrue(lower.disconnecting)
