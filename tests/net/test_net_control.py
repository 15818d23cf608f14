"""ConnectionControl offline: admission order, the header timeout, leftover bytes after the header, the live count."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mailgw.net.clients import ClientSet
from mailgw.net.control import ConnectionControl, ControlledFactory
from mailgw.publish.proxyproto import encode_v1, encode_v2


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data, self.peer, self.lost = b"", None, False

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        self.transport.write(b"greeting\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


class ControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self, control: ConnectionControl, host: str = "127.0.0.1"):
        factory = ControlledFactory(Factory.forProtocol(Recorder), control)
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        wrapper.makeConnection(transport)
        return wrapper, wrapper.wrappedProtocol, transport

    def refusals(self) -> list[str]:
        return [e["reason"] for e in self.events if e.get("event") == "connection_refused"]

    def test_limit_counts_open_connections(self) -> None:
        """The second of max_connections=1 is refused unstarted; after the first closes a new one starts."""
        control = ConnectionControl("imap.t", ClientSet.any(), 1, self.clock)
        first, inner, _ = self.connect(control)
        self.assertEqual(inner.peer.host, "127.0.0.1")
        _, second, transport = self.connect(control)
        self.assertTrue(transport.disconnecting)
        self.assertEqual((transport.value(), second.peer), (b"", None))
        first.connectionLost(None)
        self.assertEqual(control.active, 0)
        self.assertTrue(inner.lost)
        _, third, _ = self.connect(control)
        self.assertIsNotNone(third.peer)
        self.assertEqual(self.refusals(), ["max_connections"])

    def test_header_then_pipelined_bytes(self) -> None:
        """Bytes after the header in the same segment reach the protocol; its peer is the header's client."""
        control = ConnectionControl("imap.t", ClientSet.any(), 10, self.clock, proxy_from=ClientSet(["127.0.0.1/32"]))
        wrapper, inner, transport = self.connect(control)
        self.assertEqual(transport.value(), b"")
        wrapper.dataReceived(encode_v2("198.51.100.7", 5555, "127.0.0.1", 143)[:10])
        self.assertIsNone(inner.peer)
        wrapper.dataReceived(encode_v2("198.51.100.7", 5555, "127.0.0.1", 143)[10:] + b"a1 NOOP\r\n")
        self.assertEqual((inner.peer.host, inner.peer.port, inner.data), ("198.51.100.7", 5555, b"a1 NOOP\r\n"))
        self.assertEqual(transport.value(), b"greeting\r\n")

    def test_header_timeout(self) -> None:
        """A trusted proxy that sends nothing is closed after header_timeout, with one line."""
        control = ConnectionControl("imap.t", ClientSet.any(), 10, self.clock, proxy_from=ClientSet(["127.0.0.1/32"]),
                                    header_timeout=5)
        _, inner, transport = self.connect(control)
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual((self.refusals(), inner.peer), (["proxy_header_timeout"], None))

    def test_clients_apply_to_the_header_address(self) -> None:
        """With PROXY protocol the client set is checked against the client in the header, not the proxy."""
        control = ConnectionControl("imap.t", ClientSet(["192.0.2.0/24"]), 10, self.clock, proxy_from=ClientSet(["127.0.0.1/32"]))
        wrapper, inner, transport = self.connect(control)
        wrapper.dataReceived(encode_v1("198.51.100.7", 1, "127.0.0.1", 2))
        self.assertTrue(transport.disconnecting)
        wrapper, inner, transport = self.connect(control)
        wrapper.dataReceived(encode_v1("192.0.2.9", 1, "127.0.0.1", 2))
        self.assertEqual(inner.peer.host, "192.0.2.9")
        self.assertEqual(self.refusals(), ["not_in_clients"])
        self.assertIn("rip=198.51.100.7", [e for e in self.events if e.get("event") == "connection_refused"][0]["mailgw_line"])
