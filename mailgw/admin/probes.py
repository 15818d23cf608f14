"""What the admin surfaces read from a running gateway: backend health checks, scrape-time gauges, throttled peers.

The gateway is met only through mailgw.interfaces.IGatewayView: its directories (IDirectory),
relay queues (IRelayQueue), sessions (ISessionRegistry) and configuration.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from twisted.internet import defer

from mailgw.errors import AuthUnavailable
from mailgw.interfaces import IDirectory, IGatewayView, IRelayQueue
from mailgw.observe import metrics

HEALTH_PROBE_LOGIN = "mailgw-health-probe"


def directory_health(backend: IDirectory) -> defer.Deferred:
    """Is a credential backend reachable? A lookup of a login that does not exist must answer, not fail."""
    name = f"directory:{backend.name}"

    def failed(failure: Any) -> tuple[str, bool, str]:
        if failure.check(AuthUnavailable):
            return name, False, str(failure.value.detail or failure.value.public)[:200]
        return name, False, type(failure.value).__name__

    d = defer.maybeDeferred(backend.lookup, HEALTH_PROBE_LOGIN)
    return d.addCallbacks(lambda _: (name, True, "reachable"), failed)


def relay_queues(gateway: IGatewayView) -> dict[str, IRelayQueue]:
    """Every relay queue by submission name."""
    return gateway.relay_queues()


def _oldest(entries: list[dict]) -> float:
    return max((float(e.get("age", 0) or 0) for e in entries), default=0.0)


def queue_health(gateway: IGatewayView, name: str, queue: IRelayQueue) -> tuple[str, bool, dict[str, Any]]:
    """A relay queue is down when its oldest message is older than max_queue_age (it is stuck)."""
    entries = queue.entries()
    oldest = _oldest(entries)
    sub = gateway.config.submission.get(name)
    limit = sub.max_queue_age if sub is not None else 5 * 86400.0
    label = f"relay_queue:{name}" if name else "relay_queue"
    return label, oldest < limit, {"messages": len(entries), "oldest_age_seconds": round(oldest, 1)}


def builtin_health_checks(gateway: IGatewayView) -> list[Callable[[], Any]]:
    """One check per credential backend, and the relay queue's age when there is a queue."""
    checks: list[Callable[[], Any]] = []
    for backend in gateway.directories():
        checks.append(functools.partial(directory_health, backend))
    for name, queue in relay_queues(gateway).items():
        checks.append(functools.partial(queue_health, gateway, name, queue))
    return checks


class MetricsRefresher:
    """Scrape-time gauges: open sessions per (listener, protocol), relay queue size and age.

    Series of listeners whose sessions all closed are set to 0 rather than dropped.
    """

    def __init__(self, gateway: IGatewayView) -> None:
        self.gateway = gateway
        self._seen: set[tuple[str, str]] = set()

    def __call__(self) -> None:
        counts = self.gateway.sessions.counts()
        for listener, protocol in self._seen - set(counts):
            metrics.connections_active.labels(listener=listener, protocol=protocol).set(0)
        for (listener, protocol), count in counts.items():
            metrics.connections_active.labels(listener=listener, protocol=protocol).set(count)
        self._seen.update(counts)
        queues = relay_queues(self.gateway)
        if queues:
            entries = [e for q in queues.values() for e in q.entries()]
            metrics.relay_queue_messages.set(len(entries))
            metrics.relay_queue_oldest_age_seconds.set(_oldest(entries))


def throttled_peers(gateway: IGatewayView) -> list[dict[str, Any]]:
    """Client networks and (network, account) pairs over their failure budget now, for the manhole."""
    return gateway.throttled()
