"""THE one place where configuration becomes objects and services.

`build(config, reactor)` returns the root service of a `twistd mailgw` process. Reading it top to
bottom shows the whole process: shared pieces first (thread pools, certificates, sessions, store,
credential checker), then one builder per kind of listener. Nothing else in mailgw reads the
configuration; packages receive plain values and objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet import defer
from twisted.logger import ILogObserver, Logger
from twisted.python.threadpool import ThreadPool

from mailgw.config.schema import Config
from mailgw.errors import ConfigError
from mailgw.net.listen import ListenerService
from mailgw.net.sessions import SessionRegistry
from mailgw.net.tls import ServerTLS, TLSRegistry
from mailgw.observe.log import make_observer

log = Logger()


class ThreadPoolService(Service):
    """A named, bounded thread pool started with the reactor and stopped (joined) at shutdown."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class MailgwService(MultiService):
    """The root service: knows its listeners (readiness) and installs the configured log observer."""

    def __init__(self, gateway: "Gateway") -> None:
        super().__init__()
        self.gateway = gateway
        self.listeners: list[ListenerService] = []

    def setServiceParent(self, parent: IServiceCollection) -> None:
        # twistd starts logging after makeService and honours an ILogObserver component on the
        # application, so [log] format replaces twistd's default observer instead of doubling it.
        super().setServiceParent(parent)
        setComponent = getattr(parent, "setComponent", None)
        if setComponent is not None and self.gateway.config.log.format != "text":
            setComponent(ILogObserver, make_observer(self.gateway.config.log.format, self.gateway.config.log.level))

    def ready(self) -> defer.Deferred:
        """Fires once every listener is bound."""
        return defer.gatherResults([svc.listening for svc in self.listeners], consumeErrors=True)


@dataclass
class Gateway:
    """The shared pieces every listener is built from."""

    config: Config
    reactor: Any
    tls: TLSRegistry
    sessions: SessionRegistry
    disk_pool: ThreadPool
    root: Optional[MailgwService] = None
    store: Any = None
    auth: Any = None
    queue: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def listen(self, description: str, factory: Any, implicit_tls: Optional[ServerTLS] = None, label: str = "") -> ListenerService:
        assert self.root is not None
        svc = ListenerService(self.reactor, description, factory, implicit_tls.context_factory() if implicit_tls else None, label)  # label: the config key, e.g. "imap.secure.bind_tls[0]"
        svc.setServiceParent(self.root)
        self.root.listeners.append(svc)
        return svc


def build_tls(config: Config) -> TLSRegistry:
    """Load and check every named certificate; ConfigError lists each bad one."""
    registry = TLSRegistry()
    problems: list[str] = []
    for name, cert in config.tls.items():
        try:
            registry.add(ServerTLS(name, cert.cert_file, cert.key_file, cert.min_version,
                                   (config.server.hostname, *cert.server_names), registry))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return registry


def check(config: Config) -> None:
    """Everything start-up checks short of binding (used by `mailgwctl check-config`)."""
    build_tls(config)


# --------------------------------------------------------------------------- submission relay


def _smarthost(config: Config, name: str, sub: Any) -> Any:
    """[submission.NAME.smarthost] as the client's SmarthostConfig (password read from its file)."""
    from mailgw.smtp.client import SmarthostConfig

    host = sub.smarthost
    if host is None:
        return None
    password = None
    if host.auth_password_file:
        try:
            with open(host.auth_password_file, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"submission.{name}.smarthost.auth_password_file: {exc.strerror}") from None
    return SmarthostConfig(host=host.host, port=host.port, starttls="implicit" if host.implicit_tls else host.starttls,
                           ca_file=host.ca_file, username=host.auth_user, password=password,
                           helo=config.server.hostname)


def build_submission(gateway: Gateway, name: str, sub: Any) -> None:
    """One [submission.NAME]: its queue and relay runner, and a listener per bind / bind_tls endpoint."""
    from mailgw.smtp.factory import SubmissionFactory
    from mailgw.smtp.policy import SubmissionPolicy
    from mailgw.smtp.queue import RelayQueue
    from mailgw.smtp.relay import RelayRunner, RelayService

    config, reactor = gateway.config, gateway.reactor
    if gateway.auth is None or gateway.store is None:
        log.warn("submission.{name}: no store or credential checker assembled; listener not started",
                 name=name, event="submission.disabled")
        return
    tls = gateway.tls.get(sub.tls)
    if tls is None:
        raise ConfigError(f"submission.{name}.tls: no [tls.{sub.tls}] certificate")
    policy = SubmissionPolicy(local_domains=frozenset(sub.local_domains), send_as=sub.send_as,
                              max_message_size=sub.max_message_size, max_recipients=sub.max_recipients,
                              long_lines=sub.long_lines, idle_timeout=sub.timeout)
    queue = RelayQueue(os.path.join(config.server.state_dir, "queue", name), reactor, gateway.disk_pool)
    gateway.extras[f"queue.{name}"] = queue
    if gateway.queue is None:
        gateway.queue = queue
    factory = SubmissionFactory(name, gateway.auth, gateway.store, queue, tls, config.server.hostname, policy,
                                reactor, gateway.disk_pool, mechanisms=tuple(m.upper() for m in sub.auth),
                                registry=gateway.sessions)
    runner = RelayRunner(queue, reactor, config.server.hostname, policy.is_local, factory.local,
                         _smarthost(config, name, sub), max_queue_age=sub.max_queue_age, name=name)
    assert gateway.root is not None
    RelayService(runner).setServiceParent(gateway.root)
    for i, endpoint in enumerate(sub.bind):
        gateway.listen(endpoint, factory, label=f"submission.{name}.bind[{i}]")
    implicit = factory.for_implicit_tls()
    for i, endpoint in enumerate(sub.bind_tls):
        gateway.listen(endpoint, implicit, implicit_tls=tls, label=f"submission.{name}.bind_tls[{i}]")


def build(config: Config, reactor: Any) -> MailgwService:
    """The whole service tree of one mailgw process."""
    disk_pool = ThreadPool(minthreads=1, maxthreads=4, name="mailgw-disk")
    gateway = Gateway(config=config, reactor=reactor, tls=build_tls(config), sessions=SessionRegistry(), disk_pool=disk_pool)
    root = MailgwService(gateway)
    gateway.root = root
    ThreadPoolService(disk_pool).setServiceParent(root)
    os.makedirs(config.server.state_dir, exist_ok=True)
    for name, sub in config.submission.items():
        build_submission(gateway, name, sub)
    return root
