"""SubmissionFactory: one [submission.NAME] listener's shared objects, building a session per connection."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mailgw.interfaces import IAuthService, IMessageStore, IServerTLS, ISessionRegistry
from mailgw.observe import metrics
from mailgw.smtp.local import LocalDelivery
from mailgw.smtp.policy import SubmissionPolicy
from mailgw.smtp.queue import RelayQueue
from mailgw.smtp.server import SubmissionSession

log = Logger()


class SubmissionFactory(Factory):
    """Builds SubmissionSessions; `implicit_tls=True` for a bind_tls (465) listener.

    The same objects serve both listeners of a virtual server: make one factory per listener
    with the same arguments (or call `for_implicit_tls()`).
    """

    noisy = False

    def __init__(self, name: str, auth_service: IAuthService, store: IMessageStore, queue: RelayQueue,
                 tls: IServerTLS, hostname: str, policy: SubmissionPolicy, reactor: Any, pool: ThreadPool,
                 implicit_tls: bool = False, registry: Optional[ISessionRegistry] = None) -> None:
        self.name = name
        self.auth = auth_service
        self.store = store
        self.queue = queue
        self.tls = tls
        self.hostname = hostname
        self.policy = policy
        self.reactor = reactor
        self.pool = pool
        self.implicit_tls = implicit_tls
        self.registry = registry
        self.local = LocalDelivery(auth_service, store, reactor, pool)
        self.sessions: set[SubmissionSession] = set()

    def for_implicit_tls(self) -> "SubmissionFactory":
        """The twin factory for the implicit-TLS port (wrap it with TLSMemoryBIOFactory or an ssl: endpoint)."""
        return SubmissionFactory(self.name, self.auth, self.store, self.queue, self.tls, self.hostname, self.policy,
                                 self.reactor, self.pool, True, self.registry)

    def buildProtocol(self, addr: Any) -> Protocol:
        return SubmissionSession(self, self.implicit_tls)

    def session_opened(self, session: SubmissionSession) -> None:
        self.sessions.add(session)
        metrics.connections_total.labels(listener=self.name, protocol="smtp").inc()
        metrics.connections_active.labels(listener=self.name, protocol="smtp").inc()
        if self.registry is not None:
            self.registry.add(self.name, "smtp", session)

    def session_closed(self, session: SubmissionSession) -> None:
        if session in self.sessions:
            metrics.connections_active.labels(listener=self.name, protocol="smtp").dec()
        self.sessions.discard(session)
        if self.registry is not None:
            self.registry.remove(session)
