"""THE one place where configuration becomes objects and services.

`build(config, reactor)` returns the root service of a `twistd mailgw` process. Reading it top to
bottom shows the whole process: shared pieces first (thread pools, certificates, sessions, store,
credential checker), then one builder per kind of listener. Nothing else in mailgw reads the
configuration; packages receive plain values and objects.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet import defer, threads
from twisted.logger import ILogObserver, Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailgw.admin import reload as reload_plan
from mailgw.admin.http import HealthReport, MetricsResource, admin_site
from mailgw.admin.manhole import HOST_KEY_NAME, AuthorizedKeysFile, ensure_host_key, manhole_factory
from mailgw.admin.probes import MetricsRefresher, builtin_health_checks
from mailgw.admin.reloader import Reloader, Staged
from mailgw.admin.shell import Shell
from mailgw.config.endpoints import parse_hostport
from mailgw.config.schema import Config, PublishConfig
from mailgw.errors import ConfigError
from mailgw.gateway_view import GatewayViewMixin
from mailgw.interfaces import IGatewayView, IReloadTarget
from mailgw.net.listen import ListenerService
from mailgw.net.sessions import SessionRegistry
from mailgw.net.tls import ServerTLS, TLSRegistry
from mailgw.observe import metrics
from mailgw.observe.lag import ReactorLagService
from mailgw.observe.log import make_observer
from mailgw.observe.systemd import Notifier, SystemdNotifyService, watchdog_interval
from mailgw.net.clients import ClientSet, client_set_for
from mailgw.publish import PublishFactory, PublishRule, RuleSettings
from mailgw.publish.health import TargetHealthService
from mailgw.store.service import StoreService

log = Logger()


class ThreadPoolService(Service):
    """A named, bounded thread pool started with the reactor and stopped (joined) at shutdown."""

    def __init__(self, pool: ThreadPool, users: "Optional[list[Any]]" = None) -> None:
        self.pool = pool
        self.users = users if users is not None else []  # services whose closed() the pool outlives (StoreService)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> "defer.Deferred[Any]":
        super().stopService()
        d = defer.gatherResults([user.closed() for user in self.users])
        d.addBoth(lambda _: self.pool.stop())
        return d


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

    def startService(self) -> None:
        install_sighup(self.gateway)  # before the children: READY=1 is sent from one, and a reload may follow at once
        super().startService()

    def stopService(self) -> Any:
        uninstall_sighup(self.gateway)
        return super().stopService()


@implementer(IGatewayView, IReloadTarget)
@dataclass
class Gateway(GatewayViewMixin):
    """The shared pieces every listener is built from; what admin sees of the running process (IGatewayView)."""

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
    # Operations hooks (docs/operations.md): backend checks for /health, and live-reload handlers as
    # (dotted key patterns they apply, prepare(new_config) -> Staged | install callable | Deferred of
    # one; ConfigError refuses; nothing is installed unless every prepare succeeded).
    health_checks: list[Callable[[], Any]] = field(default_factory=list)
    reload_hooks: list[tuple[tuple[str, ...], Callable[[Config], Any]]] = field(default_factory=list)
    config_source: Optional[Callable[[], Config]] = None  # re-reads the config file (SIGHUP, manhole reload())
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    reloader: Any = None  # mailgw.admin.reloader.Reloader, made on first use

    def listen(self, description: str, factory: Any, implicit_tls: Optional[ServerTLS] = None, label: str = "",
               wrap: Optional[Callable[[Any], Any]] = None) -> ListenerService:
        assert self.root is not None
        svc = ListenerService(self.reactor, description, factory, implicit_tls.context_factory() if implicit_tls else None, label, wrap)  # label: the config key, e.g. "imap.secure.bind_tls[0]"
        svc.setServiceParent(self.root)
        self.root.listeners.append(svc)
        return svc

    def reload(self) -> defer.Deferred:
        """IGatewayView: re-read the configuration file and apply it live (as SIGHUP does)."""
        return reload_from_source(self)


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
    """Everything start-up checks short of binding (used by `mailgwctl check-config`), with start-up's own functions."""
    from mailgw.auth.local import read_checked

    problems: list[str] = []
    try:
        build_tls(config)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if config.auth.local is not None and "local" in config.auth.backends:
        try:
            read_checked(config.auth.local.users_file)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)


def build_store(config: Config, reactor: Any, pool: ThreadPool) -> Any:
    """The Maildir store that IMAP serves and SMTP delivers into."""
    from mailgw.store.maildir.account import MaildirStore

    root = config.store.root or os.path.join(config.server.state_dir, "mail", "{user}")
    return MaildirStore(root, reactor, pool, quota_bytes=config.store.quota_bytes,
                        quota_messages=config.store.quota_messages, hostname=config.server.hostname)


def _read_secret(path: str, key: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def _auth_result_metric(protocol: str, mechanism: str, backend: str, result: str) -> None:
    from mailgw.observe import metrics

    metrics.auth_attempts_total.labels(protocol=protocol, mechanism=mechanism, backend=backend or "none", result=result).inc()


def build_auth(config: Config, reactor: Any) -> Any:
    """The one credential checker: backends in the configured order, NTLM, per-listener policy.

    Touches no reactor state (pools and helpers register with the reactor on first use): a
    reload runs it in a worker thread (`_prepare_auth`).
    """
    from mailgw.auth.local import LocalDirectory
    from mailgw.auth.ntlm import DirectoryNTLMVerifier, NTLMAcceptor
    from mailgw.auth.ratelimit import AuthLimits, Rate
    from mailgw.auth.policy import ListenerPolicy
    from mailgw.auth.service import AuthService
    from mailgw.auth.threads import BlockingRunner
    from mailgw.config.validate import is_loopback_url
    from mailgw.observe import metrics

    runner = BlockingRunner(reactor, "mailgw-auth", maxthreads=4)
    backends: list[Any] = []
    for name in config.auth.backends:
        if name == "local":
            if config.auth.local is not None:
                backends.append(LocalDirectory(config.auth.local.users_file, runner))
            continue
        from mailgw.auth.ldap import LDAPDirectory

        ldap = config.auth.ldap[name.split(".", 1)[1]]
        backends.append(LDAPDirectory(
            name, ldap.urls, ldap.bind_dn, _read_secret(ldap.bind_password_file, f"auth.{name}.bind_password_file"),
            ldap.user_base, reactor, user_filter=ldap.user_filter, ca_file=ldap.ca_file, starttls=ldap.starttls,
            timeout=ldap.timeout, nt_hash_attribute=ldap.nt_hash_attribute, require_group=ldap.require_group,
            uid_attribute=ldap.uid_attribute, address_attributes=(ldap.mail_attribute,),
            allow_plaintext=all(is_loopback_url(u) for u in ldap.urls), pool_size=ldap.pool_size,
            on_error=lambda server, kind: metrics.ldap_errors_total.labels(server=server, kind=kind).inc()))
    ntlm = None
    if config.auth.ntlm is not None:
        if config.auth.ntlm.source == "winbind":
            from mailgw.auth.winbind import WinbindVerifier

            verifier: Any = WinbindVerifier(config.auth.ntlm.winbind_helper, reactor, helpers=config.auth.ntlm.helpers)
        else:
            verifier = DirectoryNTLMVerifier(backends)
        host, _, dns_domain = config.server.hostname.partition(".")
        ntlm = NTLMAcceptor(verifier, domain=config.auth.ntlm.domain or "WORKGROUP", dns_domain=dns_domain,
                            hostname=host, dns_hostname=config.server.hostname, clock=reactor)
    listeners = {f"imap.{name}": ListenerPolicy(imap.auth, imap.require_tls) for name, imap in config.imap.items()}
    listeners.update({f"submission.{name}": ListenerPolicy(sub.auth, True) for name, sub in config.submission.items()})
    limits = AuthLimits(per_ip=Rate(*config.auth.limits.per_ip), per_user_ip=Rate(*config.auth.limits.per_user_ip))
    return AuthService(backends, reactor, failure_delay=config.auth.failure_delay, limits=limits, ntlm=ntlm,
                       listeners=listeners, proxy_users=config.auth.proxy_users, on_result=_auth_result_metric,
                       on_backend_time=lambda backend, seconds: metrics.auth_backend_duration_seconds.labels(backend=backend).observe(seconds))


# --------------------------------------------------------------------------- connection control


def connection_control(gateway: Gateway, key: str, server: Any) -> Callable[[Any], Any]:
    """[imap.NAME] / [submission.NAME] clients, max_connections, proxy_protocol_from: one control per virtual server.

    Returned as the `wrap` of its listeners (around implicit TLS; mailgw.net.control).
    """
    from mailgw.net.control import ConnectionControl, ControlledFactory

    named_sets = {name: cs.addresses for name, cs in gateway.config.client_sets.items()}
    control = ConnectionControl(key, client_set_for(server.clients, named_sets), server.max_connections, gateway.reactor,
                                proxy_from=ClientSet(server.proxy_protocol_from) if server.proxy_protocol_from else None)
    gateway.extras[f"control.{key}"] = control
    return lambda factory: ControlledFactory(factory, control)


CONTROL_LIVE_KEYS = ("imap.*.clients", "imap.*.max_connections", "submission.*.clients",
                     "submission.*.max_connections", "client_sets")


def _prepare_control(gateway: Gateway, new_config: Config) -> Callable[[], None]:
    """Reload hook: new `clients` and `max_connections` for new connections (open ones stay)."""
    named_sets = {name: cs.addresses for name, cs in new_config.client_sets.items()}
    staged = []
    for kind, servers in (("imap", new_config.imap), ("submission", new_config.submission)):
        for name, server in servers.items():
            control = gateway.extras.get(f"control.{kind}.{name}")
            if control is not None:
                staged.append((control, client_set_for(server.clients, named_sets), server.max_connections))

    def install() -> None:
        for control, clients, max_connections in staged:
            control.clients = clients
            control.max_connections = max_connections

    return install


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
    # The listener label of logs, metrics, sessions and the auth policy: "submission.NAME", as IMAP's "imap.NAME".
    factory = SubmissionFactory(f"submission.{name}", gateway.auth, gateway.store, queue, tls, config.server.hostname,
                                policy, reactor, gateway.disk_pool, registry=gateway.sessions)
    runner = RelayRunner(queue, reactor, config.server.hostname, policy.is_local, factory.local,
                         _smarthost(config, name, sub), max_queue_age=sub.max_queue_age, name=name)
    assert gateway.root is not None
    RelayService(runner).setServiceParent(gateway.root)
    wrap = connection_control(gateway, f"submission.{name}", sub)
    for i, endpoint in enumerate(sub.bind):
        gateway.listen(endpoint, factory, label=f"submission.{name}.bind[{i}]", wrap=wrap)
    implicit = factory.for_implicit_tls()
    for i, endpoint in enumerate(sub.bind_tls):
        gateway.listen(endpoint, implicit, implicit_tls=tls, label=f"submission.{name}.bind_tls[{i}]", wrap=wrap)


# --------------------------------------------------------------------------- IMAP virtual servers


def build_imap(gateway: Gateway, name: str, imap: Any) -> None:
    """One [imap.NAME]: a STARTTLS-capable factory for `bind`, an implicit-TLS one for `bind_tls`."""
    from mailgw.imap.calendaring import Presenter
    from mailgw.imap.config import IMAPLimits
    from mailgw.imap.factory import IMAPServerFactory

    if gateway.auth is None or gateway.store is None:
        log.warn("imap.{name}: no store or credential checker assembled; listener not started",
                 name=name, event="imap.disabled")
        return
    tls = gateway.tls.get(imap.tls) if imap.tls else None
    if imap.tls and tls is None:
        raise ConfigError(f"imap.{name}.tls: no [tls.{imap.tls}] certificate")
    if imap.bind_tls and tls is None:
        raise ConfigError(f"imap.{name}.bind_tls: an implicit-TLS listener needs imap.{name}.tls")
    limits = IMAPLimits(max_line=imap.max_line, append_limit=imap.append_limit,
                        preauth_timeout=imap.preauth_timeout, autologout=imap.autologout,
                        max_user_ip_sessions=imap.max_connections_per_user_ip)
    presenter = Presenter(calendar_settings(gateway.config, imap))  # both listeners share its cache
    gateway.extras[f"calendaring.imap.{name}"] = presenter
    common = dict(fast_message_retrieval=imap.fast_message_retrieval, hostname=gateway.config.server.hostname,
                  limits=limits, registry=gateway.sessions, presenter=presenter)
    label = f"imap.{name}"  # the listener name the auth service keys its ListenerPolicy (auth, require_tls) by
    wrap = connection_control(gateway, label, imap)
    plain = IMAPServerFactory(label, gateway.auth, gateway.store, tls, gateway.reactor, **common)
    for i, endpoint in enumerate(imap.bind):
        gateway.listen(endpoint, plain, label=f"imap.{name}.bind[{i}]", wrap=wrap)
    implicit = IMAPServerFactory(label, gateway.auth, gateway.store, tls, gateway.reactor, implicit_tls=True, **common)
    for i, endpoint in enumerate(imap.bind_tls):
        gateway.listen(endpoint, implicit, implicit_tls=tls, label=f"imap.{name}.bind_tls[{i}]", wrap=wrap)


def calendar_settings(config: Config, imap: Any) -> Any:
    """[imap.NAME] calendaring as the IMAP package's CalendarSettings (None: messages shown as stored)."""
    from mailgw.imap.calendaring import CalendarSettings

    cal = imap.calendaring
    if cal is None:
        return None
    return CalendarSettings(front_end=cal.front_end, use_ssl=cal.use_ssl, path=cal.path, hostname=config.server.hostname)


CALENDARING_LIVE_KEYS = ("imap.*.calendaring",)


def _prepare_calendaring(gateway: Gateway, new_config: Config) -> Callable[[], None]:
    """Reload hook: new calendaring settings for the running servers; sessions show them from their next SELECT."""
    prefix = "calendaring.imap."
    staged = [(presenter, calendar_settings(new_config, new_config.imap[key[len(prefix):]]))
              for key, presenter in gateway.extras.items()
              if key.startswith(prefix) and key[len(prefix):] in new_config.imap]

    def install() -> None:
        for presenter, settings in staged:
            presenter.configure(settings)

    return install


def build(config: Config, reactor: Any, source: Optional[Callable[[], Config]] = None,
          environ: Optional[dict[str, str]] = None) -> MailgwService:
    """The whole service tree of one mailgw process; `source` re-reads the config for reloads."""
    disk_pool = ThreadPool(minthreads=1, maxthreads=4, name="mailgw-disk")
    gateway = Gateway(config=config, reactor=reactor, tls=build_tls(config), sessions=SessionRegistry(), disk_pool=disk_pool)
    gateway.config_source = source
    root = MailgwService(gateway)
    gateway.root = root
    pool_service = ThreadPoolService(disk_pool)
    pool_service.setServiceParent(root)
    os.makedirs(config.server.state_dir, exist_ok=True)
    gateway.store = build_store(config, reactor, disk_pool)
    store_service = StoreService(gateway.store)
    store_service.setServiceParent(root)  # stops (saving indexes) before the disk pool, which waits for it
    pool_service.users.append(store_service)
    gateway.auth = build_auth(config, reactor)
    for name, sub in config.submission.items():
        build_submission(gateway, name, sub)
    for name, imap in config.imap.items():
        build_imap(gateway, name, imap)
    _build_publish(gateway)
    build_admin(gateway, dict(os.environ) if environ is None else environ)
    return root


def _publish_rules(config: Config) -> dict[str, tuple[RuleSettings, ClientSet]]:
    named_sets = {name: cs.addresses for name, cs in config.client_sets.items()}
    out = {}
    for name, cfg in config.publish.items():
        host, port = parse_hostport(cfg.target)
        out[name] = (RuleSettings(name=name, listen=cfg.listen, target_host=host, target_port=port, protocol=cfg.protocol,
                                  proxy_protocol=cfg.proxy_protocol, max_connections=cfg.max_connections,
                                  max_per_client=cfg.max_per_client, connect_timeout=cfg.connect_timeout,
                                  idle_timeout=cfg.idle_timeout, splice=cfg.splice),
                     client_set_for(cfg.clients, named_sets))
    return out


def _build_publish(gateway: Gateway) -> None:
    """Server publishing rules: one listener and forwarder per [publish.NAME]; rules in extras["publish"]."""
    rules: dict[str, PublishRule] = {}
    for name, (settings, clients) in _publish_rules(gateway.config).items():
        rule = PublishRule(settings, clients, gateway.reactor, gateway.sessions)
        gateway.listen(settings.listen, PublishFactory(rule, gateway.reactor), label=f"publish.{name}.listen")
        rules[name] = rule
    gateway.extras["publish"] = rules
    if rules:  # /health: each target's reachability from a periodic connect, never one per request
        assert gateway.root is not None
        health = TargetHealthService(rules.values(), gateway.reactor)
        health.setServiceParent(gateway.root)
        gateway.extras["publish_health"] = health


def prepare_publish(gateway: Gateway, config: Config) -> tuple[list[str], Callable[[], None]]:
    """SIGHUP, step one: (one line per change that needs a restart, the step that applies the rest)."""
    rules, wanted = gateway.extras.get("publish", {}), _publish_rules(config)
    problems = [f"publish.{name}: rule added or removed (restart mailgw)" for name in sorted(set(rules) ^ set(wanted))]
    common = sorted(set(rules) & set(wanted))
    problems += [f"publish.{name}.listen: cannot change on reload (restart mailgw)" for name in common
                 if wanted[name][0].listen != rules[name].settings.listen]

    def install() -> None:
        for name in common:
            rules[name].reconfigure(*wanted[name])

    return problems, install


def reload_publish(gateway: Gateway, config: Config) -> list[str]:
    """Apply new client sets and settings to the running rules, all or none; one line per change that needs a restart."""
    problems, install = prepare_publish(gateway, config)
    if not problems:
        install()
    return problems


# --------------------------------------------------------------------------- operations (admin, systemd, reload)


def build_admin(gateway: Gateway, environ: dict[str, str]) -> None:
    """sd_notify readiness and watchdog, the HTTP health/metrics endpoint and the SSH manhole."""
    assert gateway.root is not None
    gateway.notifier = Notifier.from_environ(environ)
    SystemdNotifyService(gateway.notifier, gateway.root.ready, gateway.reactor,
                         watchdog_interval(environ)).setServiceParent(gateway.root)
    ReactorLagService(gateway.reactor, metrics.reactor_lag_seconds).setServiceParent(gateway.root)  # /metrics: reactor stalls
    health = HealthReport(gateway.listeners, lambda: [*builtin_health_checks(gateway), *gateway.health_checks],
                          gateway.reactor, targets=gateway.publish_targets)
    if gateway.auth is not None:
        gateway.reload_hooks.append((AUTH_LIVE_KEYS, functools.partial(_prepare_auth, gateway)))
    gateway.reload_hooks.append((PUBLISH_LIVE_KEYS, functools.partial(_prepare_publish, gateway)))
    gateway.reload_hooks.append((CONTROL_LIVE_KEYS, functools.partial(_prepare_control, gateway)))
    gateway.reload_hooks.append((CALENDARING_LIVE_KEYS, functools.partial(_prepare_calendaring, gateway)))
    admin = gateway.config.admin
    if admin.http is not None:
        site = admin_site(health, MetricsResource(metrics.REGISTRY, MetricsRefresher(gateway)))
        gateway.listen(admin.http.listen, site, label="admin.http.listen")
    if admin.manhole is not None:
        host_key = ensure_host_key(os.path.join(gateway.config.server.state_dir, HOST_KEY_NAME))
        shell = Shell(gateway, gateway.reload, health.report)
        factory = manhole_factory(shell.namespace(), host_key, AuthorizedKeysFile(admin.manhole.authorized_keys_file))
        gateway.listen(admin.manhole.listen, factory, label="admin.manhole.listen")


_AUTH_DIRECTORY_KEYS = ("auth.backends", "auth.local", "auth.ldap", "auth.ntlm")
# The pre-auth policy lives in the credential checker (mailgw.auth.policy), and sessions ask it
# per command: a server's mechanisms and require_tls change live with it.
AUTH_LIVE_KEYS = ("auth", "imap.*.auth", "imap.*.require_tls", "submission.*.auth")


def _prepare_auth(gateway: Gateway, new_config: Config) -> "defer.Deferred[Staged]":
    """Reload hook for the credential checker: build a fresh one in a worker thread, adopt it on install.

    Building reads the users file and bind password files and hashes a dummy password (argon2id,
    ~0.2 s): in gateway.disk_pool, never on the reactor, so sessions keep being served (build_auth
    must therefore touch no reactor state; its pools and helpers start on first use). ConfigError
    refuses. On install the running checker takes the new limits, delay and policies in place
    (protocols keep the object they hold, failure windows survive: a reload must not reset an
    attacker's budget); changed directories replace the old ones, whose pools are stopped. A
    reload refused by a later hook discards the fresh checker.
    """
    changed = reload_plan.changed_keys(gateway.config.auth, new_config.auth, "auth")
    directories = any(reload_plan.matches(key, p) for key in changed for p in _AUTH_DIRECTORY_KEYS)
    d = threads.deferToThreadPool(gateway.reactor, gateway.disk_pool, build_auth, new_config, gateway.reactor)
    return d.addCallback(lambda fresh: Staged(install=lambda: gateway.auth.adopt(fresh, directories=directories),
                                              discard=fresh.retire))


# Everything of a rule but its listening endpoint, and the client sets, apply to running rules.
PUBLISH_LIVE_KEYS = tuple(f"publish.*.{f.name}" for f in dataclasses.fields(PublishConfig) if f.name != "listen") + ("client_sets",)


def _prepare_publish(gateway: Gateway, new_config: Config) -> Callable[[], None]:
    """Reload hook for the publishing rules (rules added, removed or moved were refused before as restart-only)."""
    problems, install = prepare_publish(gateway, new_config)
    if problems:
        raise ConfigError(problems)
    return install


def install_sighup(gateway: Gateway) -> None:
    """SIGHUP reloads (Twisted's reactor leaves SIGHUP at its default, which kills the process)."""
    def handler(signum: int, frame: Any) -> None:
        gateway.reactor.callFromThread(reload_from_source, gateway)

    try:
        gateway.extras["_previous_sighup"] = signal.signal(signal.SIGHUP, handler)
    except ValueError:  # not the main thread (an embedded gateway): no signal handling
        log.warn("SIGHUP reload not available outside the main thread", event="config_reload.no_signal")


def uninstall_sighup(gateway: Gateway) -> None:
    previous = gateway.extras.pop("_previous_sighup", None)
    if previous is not None:
        try:
            signal.signal(signal.SIGHUP, previous)
        except ValueError:
            pass


def _reloader(gateway: Gateway) -> Reloader:
    if gateway.reloader is None:
        gateway.reloader = Reloader(gateway, lambda name, cert, names, registry: ServerTLS(
            name, cert.cert_file, cert.key_file, cert.min_version, names, registry))
    return gateway.reloader


def reload_from_source(gateway: Gateway) -> defer.Deferred:
    """Re-read the config file and apply it live (SIGHUP, the manhole's reload()); see mailgw.admin.reloader."""
    return _reloader(gateway).from_source()


def reload(gateway: Gateway, new_config: Config) -> defer.Deferred:
    """Apply `new_config` live; fires with "ok", "refused", "invalid" or "failed" (docs/operations.md)."""
    return _reloader(gateway).apply(new_config)
