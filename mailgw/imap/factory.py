"""IMAPServerFactory: one virtual server's policy bound to the shared auth service and store."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.imap.commands import table  # noqa: F401  (installs the command table)
from mailgw.imap.config import IMAPLimits, IMAPPolicy
from mailgw.imap.fetch import FetchCache
from mailgw.imap.session import IMAPSession
from mailgw.interfaces import IAuthService, IMessageStore, IServerTLS


class IMAPServerFactory(Factory):
    """Builds IMAPSession protocols. `implicit_tls` marks connections that arrive already in TLS
    (wrap this factory with `implicit_tls_factory` for 993)."""

    protocol = IMAPSession  # type: ignore[assignment]

    def __init__(self, name: str, auth_service: IAuthService, store: IMessageStore, tls: Optional[IServerTLS],
                 reactor: Any, fast_message_retrieval: bool = True, hostname: str = "localhost",
                 limits: Optional[IMAPLimits] = None, implicit_tls: bool = False, registry: Any = None,
                 presenter: Any = None) -> None:
        self.policy = IMAPPolicy(name=name, fast_message_retrieval=fast_message_retrieval, hostname=hostname,
                                 limits=limits or IMAPLimits())
        self.auth_service = auth_service
        self.store = store
        self.tls = tls
        self.reactor = reactor
        self.implicit_tls = implicit_tls
        self.registry = registry
        self.fetch_cache = FetchCache()
        self.presenter = presenter  # calendaring: shared by the server's listeners, reconfigured on reload

    def buildProtocol(self, addr: Any) -> IMAPSession:
        proto = IMAPSession(self.policy, self.auth_service, self.store, self.reactor,
                            None if self.implicit_tls else self.tls, self.implicit_tls, self.registry,
                            self.fetch_cache, self.presenter)
        proto.factory = self
        return proto


def implicit_tls_factory(factory: IMAPServerFactory) -> TLSMemoryBIOFactory:
    """IMAPS (993): TLS from the first byte; the wrapped factory's sessions start with `tls=True`."""
    assert factory.tls is not None, "an implicit-TLS listener needs a certificate"
    return TLSMemoryBIOFactory(factory.tls.context_factory(), False, factory)
