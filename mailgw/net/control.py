"""Connection control of one virtual server: who may connect, how many at once, PROXY protocol from trusted proxies.

`ConnectionControl` holds a virtual server's settings and live count (shared by all its listeners);
`ControlledFactory` wraps a listener's factory (outside implicit TLS: the PROXY header precedes
the TLS handshake). Each connection is decided before the wrapped protocol sees it, so a refused
client gets no greeting, only a close, and the gateway one `connection_refused` line:

    connection_refused listener=imap.secure rip=192.0.2.7 rport=50123 reason=not_in_clients

Reasons: not_in_clients, max_connections, not_a_trusted_proxy (a listener with
proxy_protocol_from, a peer outside it), proxy_header_invalid, proxy_header_timeout.

With `proxy_from`, the peer must be one of those proxies and send a v1 or v2 header first
(mailgw.net.proxyheader); the client address in it replaces the proxy's for `getPeer()`, so the
session's logs, auth throttling, fail2ban lines, the client set and the connection limit all see
the real client. Like Dovecot's `haproxy_trusted_networks`, a listener that takes headers takes
connections from its proxies only: a header from anyone else would let them choose their address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, ITransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from .clients import ClientSet
from .proxyheader import HEADER_MAX, ProxyHeaderError, parse

log = Logger()

REASONS = ("not_in_clients", "max_connections", "not_a_trusted_proxy", "proxy_header_invalid", "proxy_header_timeout")


@dataclass
class ConnectionControl:
    """One [imap.NAME] / [submission.NAME]'s admission settings and its open-connection count."""

    name: str  # "imap.secure": the listener name in log lines
    clients: ClientSet
    max_connections: int
    clock: Any
    proxy_from: Optional[ClientSet] = None  # None: no PROXY protocol on this virtual server
    header_timeout: float = 10.0
    active: int = 0

    def refused(self, host: str, port: int, reason: str) -> None:
        # host is the transport's or a parsed IP address: nothing a client can forge into the line
        log.warn("{mailgw_line}", mailgw_line=f"connection_refused listener={self.name} rip={host} rport={port} reason={reason}",
                 event="connection_refused", listener=self.name, rip=host, rport=port, reason=reason)


def _host_port(address: Any) -> tuple[str, int]:
    return str(getattr(address, "host", "") or ""), int(getattr(address, "port", 0) or 0)


class ControlledProtocol(ProtocolWrapper):
    """The wrapped protocol starts only once the connection is admitted (and its PROXY header read)."""

    factory: "ControlledFactory"

    def __init__(self, factory: "ControlledFactory", wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self.control = factory.control
        self._peer: Optional[IAddress] = None
        self._buffer = b""
        self._state = "new"  # new -> header -> started | refused
        self._counted = False
        self._timer: Any = None

    # -- transport side seen by the wrapped protocol -----------------------------------------

    def getPeer(self) -> IAddress:
        return self._peer if self._peer is not None else self.transport.getPeer()  # type: ignore[union-attr]

    # -- admission ------------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection would start the wrapped protocol at once: decide first.
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        self.transport = transport
        self.connected = 1
        self.factory.registerProtocol(self)
        host, port = _host_port(transport.getPeer())
        control = self.control
        if control.proxy_from is not None and not control.proxy_from.allows(host):
            self._refuse(host, port, "not_a_trusted_proxy")
        elif control.active >= control.max_connections:
            self._refuse(host, port, "max_connections")
        elif control.proxy_from is not None:
            self._count()
            self._state = "header"
            self._timer = control.clock.callLater(control.header_timeout, self._header_timeout)
        elif not control.clients.allows(host):
            self._refuse(host, port, "not_in_clients")
        else:
            self._count()
            self._start()

    def _count(self) -> None:
        self._counted = True
        self.control.active += 1

    def _refuse(self, host: str, port: int, reason: str) -> None:
        self._state = "refused"
        self._cancel_timer()
        self.control.refused(host, port, reason)
        self.transport.loseConnection()  # type: ignore[union-attr]  # nothing was written: no greeting

    def _start(self, leftover: bytes = b"") -> None:
        self._state = "started"
        # The wrapper is the wrapped protocol's transport (ProtocolWrapper proxies ITransport to its own).
        self.wrappedProtocol.makeConnection(cast(ITransport, self))
        if leftover and self._state == "started" and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(leftover)

    def _header_timeout(self) -> None:
        self._timer = None
        if self._state == "header":
            self._refuse(*_host_port(self.transport.getPeer()), "proxy_header_timeout")  # type: ignore[union-attr]

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _header(self, data: bytes) -> None:
        self._buffer += data
        proxy_host, proxy_port = _host_port(self.transport.getPeer())  # type: ignore[union-attr]
        try:
            parsed = parse(self._buffer[:HEADER_MAX])
        except ProxyHeaderError:
            self._refuse(proxy_host, proxy_port, "proxy_header_invalid")
            return
        if parsed is None:
            if len(self._buffer) >= HEADER_MAX:  # cannot happen for a valid start; kept as the bound
                self._refuse(proxy_host, proxy_port, "proxy_header_invalid")
            return
        self._cancel_timer()
        leftover, self._buffer = self._buffer[parsed.consumed:], b""
        if parsed.source is not None:
            host, port = parsed.source
            kind = IPv6Address if ":" in host else IPv4Address
            self._peer = kind("TCP", host, port)
        host, port = _host_port(self.getPeer())
        if not self.control.clients.allows(host):
            self._refuse(host, port, "not_in_clients")
            return
        self._start(leftover)

    # -- protocol side --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state == "started":
            self.wrappedProtocol.dataReceived(data)
        elif self._state == "header":
            self._header(data)
        # refused: the connection is closing; whatever else arrives is dropped

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self._counted:
            self._counted = False
            self.control.active -= 1
        self.factory.unregisterProtocol(self)
        if self._state == "started" and self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
        self._state = "closed"  # nothing reaches the wrapped protocol any more


class ControlledFactory(WrappingFactory[ControlledProtocol]):
    """Wraps one listener's factory with its virtual server's ConnectionControl."""

    protocol = ControlledProtocol
    noisy = False

    def __init__(self, wrapped: Any, control: ConnectionControl) -> None:
        super().__init__(wrapped)
        self.control = control

    def logPrefix(self) -> str:
        return self.control.name
