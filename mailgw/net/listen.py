"""Listening services from endpoint strings, with implicit TLS wrapped by mailgw (also on systemd sockets)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.errors import ConfigError

log = Logger()


class ListenerService(StreamServerEndpointService):
    """Binds one endpoint at privileged start-up; a bind failure aborts start-up (as strports does).

    `listening` fires with the port once bound, so readiness (sd_notify READY=1) can wait for it.
    `implicit_tls` wraps the factory in TLS from the first byte: `ssl:` endpoint strings lack
    mailgw's policy and systemd-inherited sockets have no TLS form at all. `wrap` (connection
    control, mailgw.net.control) goes around everything, TLS included.
    """

    def __init__(self, reactor, description: str, factory: "Factory[Any]", implicit_tls=None, label: str = "",
                 wrap: Optional[Callable[["Factory[Any]"], "Factory[Any]"]] = None) -> None:
        try:
            endpoint = serverFromString(reactor, description)
        except (KeyError, IndexError):
            # Twisted looks systemd sockets up when the string is parsed (LISTEN_FDNAMES / LISTEN_FDS).
            raise ConfigError(f"{label or description}: {description!r}: systemd passed no such socket "
                              "(check the .socket unit's FileDescriptorName and that it is enabled)") from None
        if implicit_tls is not None:
            factory = TLSMemoryBIOFactory(implicit_tls, False, factory)
        if wrap is not None:
            factory = wrap(factory)  # outside TLS: connection control and the PROXY header come before the handshake
        super().__init__(endpoint, factory)
        self._raiseSynchronously = True
        self.description = description
        self.label = label or description
        self.listening: defer.Deferred[IListeningPort] = defer.Deferred()
        self.port: Optional[IListeningPort] = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._bound)  # type: ignore[union-attr]

    def _bound(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info("listening on {address} for {label}", address=str(port.getHost()), label=self.label, event="listen")
        if not self.listening.called:
            self.listening.callback(port)
        return port
