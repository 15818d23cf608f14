"""Publishing rules: admission (client sets from mailgw.net.clients, limits), live state of each rule.

A rule (ISA Server 2000's "Server Publishing Rule") maps one external endpoint to an internal
host:port for a set of clients. This module decides who may connect and keeps the per-rule state
operators look at (active connections, counters); the byte shovelling is in `forwarder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from twisted.logger import Logger
from zope.interface import implementer

from mailgw.interfaces import IPublishRule
from mailgw.net.clients import ANY, ClientSet, client_set_for
from mailgw.observe import events, metrics

from .connect import family_of

log = Logger()

__all__ = ["ANY", "ClientSet", "Connection", "PublishRule", "RuleSettings", "client_set_for"]  # client sets live in mailgw.net.clients


@dataclass(frozen=True)
class RuleSettings:
    """Everything a rule needs from its [publish.NAME] table, as plain values."""

    name: str
    listen: str
    target_host: str
    target_port: int
    protocol: str = "tcp"
    proxy_protocol: str = "off"  # off | v1 | v2
    max_connections: int = 1000
    max_per_client: int = 50
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0
    splice: bool = True

    @property
    def target(self) -> str:
        return f"[{self.target_host}]:{self.target_port}" if ":" in self.target_host else f"{self.target_host}:{self.target_port}"


class Connection(Protocol):
    """What a rule knows of one forwarded connection (implemented by the forwarder)."""

    peer: str  # "host:port" / "[v6]:port"
    peer_host: str
    user: Optional[str]

    def info(self) -> dict[str, Any]: ...

    def kick(self) -> None: ...


# Admission outcomes.
ADMIT = "accepted"
DENIED = "denied"  # peer not in the client set
LIMITED = "limited"  # max_connections or max_per_client reached


@implementer(IPublishRule)
class PublishRule:
    """The live state of one publishing rule: client set (swappable on reload), limits, connections."""

    deny_log_interval = 1.0  # seconds between denial log lines per rule (security.md F.33)

    def __init__(self, settings: RuleSettings, clients: ClientSet, clock: Any, sessions: Any = None) -> None:
        self.settings = settings
        self.target_family = family_of(settings.target_host)  # None: a host name, resolved per connection
        self.name = settings.name
        self.clients = clients
        self.clock = clock
        self.sessions = sessions  # an ISessionRegistry, or None
        self._active: dict[int, Connection] = {}
        self._per_client: dict[str, int] = {}
        self._last_deny_log = float("-inf")
        self._suppressed = 0
        self._active_gauge = metrics.publish_connections_active.labels(rule=self.name)
        self._counters = {result: metrics.publish_connections_total.labels(rule=self.name, result=result)
                          for result in ("accepted", "denied", "target_failed")}
        self.bytes_in = metrics.publish_bytes_total.labels(rule=self.name, direction="in")
        self.bytes_out = metrics.publish_bytes_total.labels(rule=self.name, direction="out")

    # -- admission -------------------------------------------------------------------------

    def admit(self, peer_host: str, peer_port: int, local: str) -> str:
        """ADMIT, DENIED or LIMITED for a new client; denials are counted and logged (rate-limited)."""
        if not self.clients.allows(peer_host):
            self._deny(peer_host, peer_port, local, "not_in_client_set")
            return DENIED
        if len(self._active) >= self.settings.max_connections:
            self._deny(peer_host, peer_port, local, "max_connections")
            return LIMITED
        if self._per_client.get(peer_host, 0) >= self.settings.max_per_client:
            self._deny(peer_host, peer_port, local, "max_per_client")
            return LIMITED
        return ADMIT

    def _deny(self, peer_host: str, peer_port: int, local: str, reason: str) -> None:
        self._counters["denied"].inc()
        now = self.clock.seconds()
        if now - self._last_deny_log < self.deny_log_interval:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last_deny_log = self._suppressed, 0, now
        events.emit(log, events.FORWARD_DENY, level="warn", rule=self.name, peer=f"{peer_host}:{peer_port}",
                    dst=local, reason=reason, suppressed=suppressed or None)

    # -- connection registry ---------------------------------------------------------------

    def opened(self, connection: Connection, peer_host: str) -> None:
        """An admitted connection starts (before the target is reached: it counts towards the limits)."""
        self._active[id(connection)] = connection
        self._per_client[peer_host] = self._per_client.get(peer_host, 0) + 1
        self._active_gauge.inc()
        if self.sessions is not None:
            self.sessions.add(f"publish.{self.name}", self.settings.protocol, connection)

    def established(self, connection: Optional[Connection] = None) -> None:
        """The target answered: the connection is forwarded (one forward_accept line, like HAProxy's connect log)."""
        self._counters["accepted"].inc()
        if connection is not None:
            events.emit(log, events.FORWARD_ACCEPT, rule=self.name, peer=connection.peer, target=self.settings.target)

    def target_failed(self, connection: Connection, reason: str) -> None:
        self._counters["target_failed"].inc()
        events.emit(log, events.FORWARD_UPSTREAM_FAILED, level="warn", rule=self.name, peer=connection.peer,
                    target=self.settings.target, reason=reason)

    def closed(self, connection: Connection, peer_host: str) -> None:
        if self._active.pop(id(connection), None) is None:
            return
        left = self._per_client.get(peer_host, 1) - 1
        if left > 0:
            self._per_client[peer_host] = left
        else:
            self._per_client.pop(peer_host, None)
        self._active_gauge.dec()
        if self.sessions is not None:
            self.sessions.remove(connection)

    # -- operations ------------------------------------------------------------------------

    def active_connections(self) -> list[dict[str, Any]]:
        """One dict per open connection: peer, target, state, bytes each way, age."""
        return [c.info() for c in list(self._active.values())]

    def set_clients(self, clients: ClientSet, close_existing: bool = True) -> int:
        """Swap the client set live (SIGHUP reload); by default close connections it no longer allows.

        Returns how many open connections were closed.
        """
        old, self.clients = self.clients, clients
        log.info("publish rule {rule}: clients {old} -> {new}", rule=self.name, old=old.describe(),
                 new=clients.describe(), event="publish.clients_changed")
        if not close_existing:
            return 0
        dropped = [c for c in list(self._active.values()) if not clients.allows(c.peer_host)]
        for connection in dropped:
            events.emit(log, events.FORWARD_REVOKED, level="warn", rule=self.name, peer=connection.peer,
                        reason="not_in_client_set")
            connection.kick()
        return len(dropped)

    def reconfigure(self, settings: RuleSettings, clients: ClientSet, close_existing: bool = True) -> int:
        """Apply a reloaded [publish.NAME]: new settings for new connections, and the new client set.

        The listening endpoint cannot change without a restart (ValueError). Returns how many open
        connections the new client set closed.
        """
        if settings.name != self.name or settings.listen != self.settings.listen:
            raise ValueError(f"publish.{self.name}.listen: cannot change on reload (restart mailgw)")
        self.settings = settings
        self.target_family = family_of(settings.target_host)
        return self.set_clients(clients, close_existing)

    def close_all(self) -> None:
        for connection in list(self._active.values()):
            connection.kick()
