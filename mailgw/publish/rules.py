"""Publishing rules: client address sets (CIDR matching), admission limits, live state of each rule.

A rule (ISA Server 2000's "Server Publishing Rule") maps one external endpoint to an internal
host:port for a set of clients. This module decides who may connect and keeps the per-rule state
operators look at (active connections, counters); the byte shovelling is in `forwarder`.
"""

from __future__ import annotations

import bisect
import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Protocol

from twisted.logger import Logger
from zope.interface import implementer

from mailgw.interfaces import IPublishRule
from mailgw.observe import events, metrics

from .connect import family_of

log = Logger()

ANY = "any"


def _normalise(host: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The peer as an address; IPv4-mapped IPv6 (dual-stack listener) becomes IPv4."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientSet:
    """An allowed set of client addresses: everything ("any"), or IPv4/IPv6 networks.

    Networks are collapsed into sorted, disjoint integer ranges per family, so a lookup is one
    bisect however long the list. An empty set allows nobody.
    """

    def __init__(self, networks: Iterable[str] = (), allow_any: bool = False) -> None:
        self.allow_any = allow_any
        parsed = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.networks: tuple[str, ...] = tuple(str(n) for n in parsed)
        self._ranges: dict[int, tuple[list[int], list[int]]] = {}
        for version in (4, 6):
            family = [n for n in parsed if n.version == version]
            collapsed = list(ipaddress.collapse_addresses(family))  # type: ignore[type-var]
            starts = [int(n.network_address) for n in collapsed]
            ends = [int(n.broadcast_address) for n in collapsed]
            self._ranges[version] = (starts, ends)

    @classmethod
    def any(cls) -> "ClientSet":
        return cls(allow_any=True)

    def allows(self, host: str) -> bool:
        """Is a peer address (as Twisted reports it) in the set?"""
        if self.allow_any:
            return True
        address = _normalise(host)
        if address is None:
            return False
        starts, ends = self._ranges[address.version]
        value = int(address)
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= ends[index]

    def describe(self) -> str:
        return ANY if self.allow_any else (", ".join(self.networks) or "(nobody)")

    def __repr__(self) -> str:
        return f"ClientSet({self.describe()})"


def client_set_for(clients: Iterable[str], named_sets: Mapping[str, Iterable[str]]) -> ClientSet:
    """A rule's `clients` list resolved: "any", CIDRs, and names of [client_sets.NAME] (their addresses)."""
    networks: list[str] = []
    for entry in clients:
        if entry == ANY:
            return ClientSet.any()
        if entry in named_sets:
            networks.extend(named_sets[entry])
        else:
            networks.append(entry)
    return ClientSet(networks)


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
