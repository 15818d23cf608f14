"""Failure budgets per client IP and per (IP, account), with an injectable clock."""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass
from typing import Optional

from twisted.internet.interfaces import IReactorTime

@dataclass(frozen=True)
class Rate:
    """At most `count` failures within `window` seconds (the config's "20/5m" is parsed by mailgw.config.units)."""

    count: int
    window: float


@dataclass(frozen=True)
class AuthLimits:
    """Failure budgets: `per_ip` for a client address, `per_user_ip` for an (address, account) pair.

    The first `slow_after` failures from an address are answered after the base failure delay;
    each further one doubles it, up to `max_delay_factor` times the base. Over a budget, attempts
    are refused without asking any backend (answered exactly like a failure).
    """

    per_ip: Rate = Rate(20, 300.0)
    per_user_ip: Rate = Rate(5, 300.0)
    slow_after: int = 3
    max_delay_factor: float = 8.0


def client_net(host: str) -> str:
    """The throttling unit of a peer: the IPv4 address, or the IPv6 /64 it is in."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class _Window:
    """Failure timestamps within a window plus attempts still in flight."""

    __slots__ = ("times", "inflight")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.inflight = 0

    def used(self, now: float, window: float) -> int:
        cutoff = now - window
        while self.times and self.times[0] <= cutoff:
            self.times.popleft()
        return len(self.times) + self.inflight


class FailureLimiter:
    """Counts failures (and in-flight attempts) per IP and per (IP, account key)."""

    _SWEEP_EVERY = 4096

    def __init__(self, limits: AuthLimits, clock: IReactorTime) -> None:
        self.limits = limits
        self._clock = clock
        self._ip: dict[str, _Window] = {}
        self._user_ip: dict[tuple[str, str], _Window] = {}
        self._ops = 0

    def allowed(self, ip: str, user: str) -> bool:
        """False when either budget is spent: the attempt must be refused without a backend."""
        now = self._clock.seconds()
        net = client_net(ip)
        w = self._ip.get(net)
        if w is not None and w.used(now, self.limits.per_ip.window) >= self.limits.per_ip.count:
            return False
        wu = self._user_ip.get((net, user))
        if wu is not None and wu.used(now, self.limits.per_user_ip.window) >= self.limits.per_user_ip.count:
            return False
        return True

    def delay_factor(self, ip: str) -> float:
        """Multiplier of the base failure delay for the next failure from this address."""
        w = self._ip.get(client_net(ip))
        if w is None:
            return 1.0
        extra = w.used(self._clock.seconds(), self.limits.per_ip.window) - self.limits.slow_after
        if extra <= 0:
            return 1.0
        return float(min(self.limits.max_delay_factor, 2.0 ** min(extra, 32)))

    def begin(self, ip: str, user: str) -> tuple[str, str]:
        """Count an attempt in flight (parallel attempts spend the budget too); returns its token."""
        net = client_net(ip)
        self._ip.setdefault(net, _Window()).inflight += 1
        self._user_ip.setdefault((net, user), _Window()).inflight += 1
        self._maybe_sweep()
        return net, user

    def end(self, token: tuple[str, str], failed: bool) -> None:
        """Finish an attempt; a failure is recorded, a success clears the (IP, account) failures."""
        net, user = token
        now = self._clock.seconds()
        w = self._ip.setdefault(net, _Window())
        wu = self._user_ip.setdefault(token, _Window())
        w.inflight = max(0, w.inflight - 1)
        wu.inflight = max(0, wu.inflight - 1)
        if failed:
            w.times.append(now)
            wu.times.append(now)
        else:
            wu.times.clear()

    def over_budget(self) -> list[tuple[str, Optional[str], int, float]]:
        """(client net, account or None, failures, seconds until the oldest counted one expires) now over budget."""
        now = self._clock.seconds()
        out: list[tuple[str, Optional[str], int, float]] = []
        for net, w in list(self._ip.items()):
            used = w.used(now, self.limits.per_ip.window)
            if used >= self.limits.per_ip.count and w.times:
                out.append((net, None, used, w.times[0] + self.limits.per_ip.window - now))
        for (net, user), w in list(self._user_ip.items()):
            used = w.used(now, self.limits.per_user_ip.window)
            if used >= self.limits.per_user_ip.count and w.times:
                out.append((net, user, used, w.times[0] + self.limits.per_user_ip.window - now))
        return out

    def record_failure(self, ip: str, user: str) -> None:
        """Record a failure that never reached a backend (malformed exchange, throttled)."""
        self.end(self.begin(ip, user), failed=True)

    def _maybe_sweep(self) -> None:
        self._ops += 1
        if self._ops % self._SWEEP_EVERY:
            return
        now = self._clock.seconds()
        for table, window in ((self._ip, self.limits.per_ip.window), (self._user_ip, self.limits.per_user_ip.window)):
            for key in [k for k, w in table.items() if w.used(now, window) == 0]:
                del table[key]  # type: ignore[arg-type]
