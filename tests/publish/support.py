"""Helpers for publishing-rule tests: in-reactor targets, a rule listener, blocking clients for threads."""

from __future__ import annotations

import socket
from typing import Any, Optional

from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from mailgw.publish import ClientSet, PublishFactory, PublishRule, RuleSettings

_rule_ids = iter(range(1, 1_000_000))


class TargetFactory(Factory):
    """Counts connections and keeps each protocol; `closed` fires per connection with its bytes."""

    def __init__(self, protocol: type) -> None:
        self.protocol = protocol
        self.connections: list[Protocol] = []
        self.ended: list[defer.Deferred] = []

    def ended_at(self, reactor: Any, index: int) -> defer.Deferred:
        """Fires with the bytes of connection number `index` once it has come and gone."""
        return until(reactor, lambda: len(self.ended) > index).addCallback(lambda _: self.ended[index])

    def buildProtocol(self, addr: Any) -> Protocol:
        proto = self.protocol()
        proto.factory = self
        proto.received = b""
        proto.done = defer.Deferred()
        self.connections.append(proto)
        self.ended.append(proto.done)
        return proto


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """Echoes; after the client's FIN, flushes what is left and closes."""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.received)


class Capture(Protocol):
    """Keeps every byte; fires `done` with them when the connection ends."""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.received)


@implementer(IHalfCloseableProtocol)
class ReplyAtEOF(Protocol):
    """Reads until the client's FIN, then replies with what it got and closes (half-close client to target)."""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"got:" + self.received)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(self.received)


@implementer(IHalfCloseableProtocol)
class GreetThenFIN(Protocol):
    """Sends a greeting and shuts its write side at once; keeps reading (half-close target to client)."""

    def connectionMade(self) -> None:
        self.transport.write(b"hello, then FIN")
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(self.received)


def start_target(reactor: Any, case: Any, protocol: type, interface: str = "127.0.0.1") -> tuple[TargetFactory, int]:
    factory = TargetFactory(protocol)
    port = reactor.listenTCP(0, factory, interface=interface)
    case.addCleanup(port.stopListening)
    return factory, port.getHost().port


def start_rule(reactor: Any, case: Any, target_port: int, clients: Optional[ClientSet] = None,
               interface: str = "127.0.0.1", target_host: str = "127.0.0.1", **settings: Any) -> tuple[PublishRule, int]:
    """A rule listening on `interface` port 0; closed at cleanup."""
    name = settings.pop("name", f"t{next(_rule_ids)}")
    settings.setdefault("splice", getattr(case, "use_splice", True))
    rule = PublishRule(RuleSettings(name=name, listen="tcp:0", target_host=target_host, target_port=target_port, **settings),
                       clients or ClientSet.any(), reactor)
    port = reactor.listenTCP(0, PublishFactory(rule, reactor), interface=interface)
    case.addCleanup(port.stopListening)
    case.addCleanup(rule.close_all)
    return rule, port.getHost().port


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def connect(port: int, host: str = "127.0.0.1", source: Optional[str] = None, timeout: float = 10.0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def refused(port: int, host: str = "127.0.0.1", source: Optional[str] = None) -> bytes:
    """Connect and read to the end: b"" when the gateway closes at once (its RST may even beat connect())."""
    try:
        sock = connect(port, host, source)
    except ConnectionResetError:
        return b""
    with sock:
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    """Everything until EOF (a reset counts as the end)."""
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not data:
            return out
        out += data


def until(reactor: Any, condition: Any, timeout: float = 5.0, step: float = 0.01) -> defer.Deferred:
    """Fires when `condition()` is true (polled each `step`), fails after `timeout`."""
    start = reactor.seconds()

    @defer.inlineCallbacks
    def poll() -> Any:
        while not condition():
            if reactor.seconds() - start > timeout:
                raise AssertionError(f"condition not met within {timeout}s")
            yield task.deferLater(reactor, step, lambda: None)
    return poll()
