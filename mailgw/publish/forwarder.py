"""The forwarder: accepted client <-> target connection, with backpressure, half-close and timeouts.

Design (notes/twisted.md "portforward and policies"): like `twisted.protocols.portforward`, the
accepted socket is paused until the target connects, then each transport is registered as the
other's streaming producer, so a slow reader pauses the fast writer and the gateway never holds
more than about two read buffers per direction. Unlike portforward, FIN is carried across each way
(`IHalfCloseableProtocol`: a client that sends and shuts down its write side still gets the reply),
the target connect has a timeout, and an idle timeout closes both sides.

That producer/consumer path is the portable one (`splice = false`). By default, when the client is
a plain socket and the target an IP address, the target is reached with `connect.RawConnect` and
both sockets are handed to `splice.SpliceRelay`, which copies small reads and splices bulk ones.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Optional

from twisted.internet import error
from twisted.internet.interfaces import IHalfCloseableProtocol, IAddress
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import proxyproto, splice
from .connect import RawConnect
from .rules import ADMIT, PublishRule

log = Logger()

READ_SIZE = 256 * 1024  # bytes per recv(): fewer reactor turns per MiB than Twisted's 64 KiB default


def _host_port(address: IAddress) -> tuple[str, int]:
    return getattr(address, "host", "?"), getattr(address, "port", 0)


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@implementer(IHalfCloseableProtocol)
class ClientSide(Protocol):
    """The accepted connection of one client; owns the pair's life cycle (the rule's Connection)."""

    user: Optional[str] = None
    transport: Any  # a TCP transport: ITCPTransport, IConsumer and IPushProducer

    def __init__(self, rule: PublishRule, reactor: Any, connect: Callable[..., Any]) -> None:
        self.rule, self.reactor, self._connect = rule, reactor, connect
        self.target: Optional[TargetSide] = None
        self.connector: Any = None
        self.state = "new"  # new | connecting | open | closed
        self.admitted = False
        self.read_eof = self.write_shut = False
        self.bytes_in = self.bytes_out = 0  # client->target, target->client
        self.started = reactor.seconds()
        self.last_active = self.started
        self.relay: Optional[splice.SpliceRelay] = None
        self._idle_call: Any = None
        self._pending: list[bytes] = []
        self.peer_host, self.peer_port = "?", 0
        self.peer = "?"

    # -- the rule's Connection ------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        bytes_in, bytes_out = self.bytes_in, self.bytes_out
        if self.relay is not None:
            bytes_in, bytes_out = bytes_in + self.relay.moved[0], bytes_out + self.relay.moved[1]
        return {"rule": self.rule.name, "peer": self.peer, "target": self.rule.settings.target, "state": self.state,
                "bytes_in": bytes_in, "bytes_out": bytes_out, "age": self.reactor.seconds() - self.started,
                "splice": self.relay is not None}

    def kick(self) -> None:
        """Close both sides now (operator action, reload that revokes the client, idle timeout)."""
        if self.relay is not None:
            self.relay.abort()
            return
        if self.target is not None and self.target.transport is not None:
            self.target.transport.abortConnection()
        if self.transport is not None:
            self.transport.abortConnection()

    # -- accepted connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer_host, self.peer_port = _host_port(self.transport.getPeer())
        self.peer = _show(self.peer_host, self.peer_port)
        self.local_host, self.local_port = _host_port(self.transport.getHost())
        if self.rule.admit(self.peer_host, self.peer_port, _show(self.local_host, self.local_port)) != ADMIT:
            # security.md F.32: no byte is read or sent and no target connection is made.
            self.state = "closed"
            self.transport.abortConnection()
            return
        self.admitted = True
        self.rule.opened(self, self.peer_host)
        self.state = "connecting"
        self.transport.pauseProducing()  # nothing is read until the target is there
        settings = self.rule.settings
        if settings.splice and self.rule.target_family is not None and splice.plain_socket(self.transport) is not None:
            self.connector = RawConnect(self.reactor, self.rule.target_family, settings.target_host, settings.target_port,
                                        settings.connect_timeout, self.target_socket_connected, self._target_failed)
        else:
            self.transport.bufferSize = self.transport.SEND_LIMIT = READ_SIZE
            self.connector = self._connect(settings.target_host, settings.target_port, TargetFactory(self),
                                           settings.connect_timeout)
        self._arm_idle()

    def _header(self) -> bytes:
        return proxyproto.encode(self.rule.settings.proxy_protocol, self.peer_host, self.peer_port,
                                 self.local_host, self.local_port)

    def target_socket_connected(self, sock: socket.socket) -> None:
        """The fast path: a plain socket to the target, moved by the splice relay."""
        if self.state != "connecting":
            sock.close()
            return
        self.state = "open"
        self.rule.established(self)
        self.relay = splice.start_raw(self.reactor, self.transport, sock, self._header(), self)

    def target_connected(self, target: "TargetSide") -> None:
        if self.state != "connecting":
            target.transport.abortConnection()
            return
        self.target, self.state = target, "open"
        self.rule.established(self)
        header = self._header()
        if self.rule.settings.splice and not self._pending and not self.read_eof:
            self.relay = splice.try_start(self.reactor, self.transport, target.transport, header, self)
            if self.relay is not None:
                return
        if header:
            target.transport.write(header)
        self.transport.registerProducer(target.transport, True)
        target.transport.registerProducer(self.transport, True)
        for chunk in self._pending:
            self._to_target(chunk)
        self._pending = []
        if self.read_eof:
            self._shut_target_write()
        else:
            self.transport.resumeProducing()

    def target_failed(self, reason: Failure) -> None:
        """connectTCP could not reach the target."""
        value = reason.value
        self._target_failed("timeout" if isinstance(value, error.TimeoutError) else (
            "refused" if isinstance(value, error.ConnectionRefusedError) else type(value).__name__))

    def _target_failed(self, kind: str) -> None:
        """Target refused, unreachable or too slow: close the client at once (security.md F.34)."""
        if self.state != "connecting":
            return
        self.rule.target_failed(self, kind)
        self.transport.loseConnection()  # a FIN: nothing was read from the client, nothing is lost

    def dataReceived(self, data: bytes) -> None:
        if self.target is None:
            self._pending.append(data)
        else:
            self._to_target(data)

    def _to_target(self, data: bytes) -> None:
        assert self.target is not None
        self.target.transport.write(data)
        self.bytes_in += len(data)
        self.rule.bytes_in.inc(len(data))
        self.last_active = self.reactor.seconds()

    def to_client(self, data: bytes) -> None:
        self.transport.write(data)
        self.bytes_out += len(data)
        self.rule.bytes_out.inc(len(data))
        self.last_active = self.reactor.seconds()

    # -- half-close: FIN from one side becomes shutdown(SHUT_WR) on the other -------------

    def readConnectionLost(self) -> None:
        if self.read_eof:
            return
        self.read_eof = True
        if self.target is not None:
            self._shut_target_write()
        if self.write_shut:
            self.transport.loseConnection()

    def _shut_target_write(self) -> None:
        assert self.target is not None
        # Our transport produces for the target no longer; a paused producer would keep the
        # target's doWrite from ever reaching its half-close (abstract.FileDescriptor.doWrite).
        self.target.transport.unregisterProducer()
        self.target.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        self.write_shut = True
        if self.read_eof:
            self.transport.loseConnection()

    def target_read_eof(self) -> None:
        """The target sent FIN: pass it on to the client once its buffer is flushed."""
        self.transport.unregisterProducer()
        self.transport.loseWriteConnection()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if not self.admitted:
            return
        connecting, self.state = self.state == "connecting", "closed"
        if connecting and self.connector is not None:
            try:
                self.connector.stopConnecting()
            except error.NotConnectingError:
                pass
        if self.relay is None and self.target is not None and self.target.transport is not None:
            # A paused producer left registered would keep loseConnection from ever closing.
            self.target.transport.unregisterProducer()
            self.target.transport.loseConnection()
        self.rule.closed(self, self.peer_host)

    # -- idle timeout ------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        timeout = self.rule.settings.idle_timeout
        if timeout > 0:
            self._idle_call = self.reactor.callLater(timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_call = None
        if self.relay is not None:
            self.last_active = max(self.last_active, self.relay.last_active)
        remaining = self.last_active + self.rule.settings.idle_timeout - self.reactor.seconds()
        if remaining > 0.001:
            self._idle_call = self.reactor.callLater(remaining, self._check_idle)
            return
        log.info("publish rule {rule}: {peer} idle for {timeout}s, closing", rule=self.rule.name, peer=self.peer,
                 timeout=self.rule.settings.idle_timeout, event="publish.idle_timeout")
        self.kick()


@implementer(IHalfCloseableProtocol)
class TargetSide(Protocol):
    """The connection to the internal server; everything it reads goes to the client."""

    transport: Any

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.read_eof = self.write_shut = False

    def connectionMade(self) -> None:
        # One read's worth per send() and per buffer: fewer reactor turns and copies per MiB.
        self.transport.bufferSize = self.transport.SEND_LIMIT = READ_SIZE
        self.client.target_connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.client.to_client(data)

    def readConnectionLost(self) -> None:
        if self.read_eof:
            return
        self.read_eof = True
        self.client.target_read_eof()
        if self.write_shut:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.write_shut = True
        if self.read_eof:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        client = self.client.transport
        if client is not None and self.client.state != "closed" and self.client.relay is None:
            client.unregisterProducer()
            client.loseConnection()  # flushes what the target sent first


class TargetFactory(ClientFactory):
    """Connects one ClientSide to the target; a failed connect closes the client."""

    noisy = False

    def __init__(self, client: ClientSide) -> None:
        self.client = client

    def buildProtocol(self, addr: Optional[IAddress]) -> TargetSide:
        protocol = TargetSide(self.client)
        protocol.factory = self
        return protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.client.target_failed(reason)


def tcp_connector(reactor: Any) -> Callable[..., Any]:
    """connect(host, port, factory, timeout) -> IConnector over reactor.connectTCP (names resolve to IPv4)."""
    def connect(host: str, port: int, factory: ClientFactory, timeout: float) -> Any:
        connector = reactor.connectTCP(host, port, factory, timeout=timeout)
        return connector
    return connect


class PublishFactory(Factory):
    """Server factory of one publishing rule's listener."""

    noisy = False

    def __init__(self, rule: PublishRule, reactor: Any, connect: Optional[Callable[..., Any]] = None) -> None:
        self.rule, self.reactor = rule, reactor
        self.connect = connect or tcp_connector(reactor)

    def buildProtocol(self, addr: Optional[IAddress]) -> ClientSide:
        protocol = ClientSide(self.rule, self.reactor, self.connect)
        protocol.factory = self
        return protocol
