"""Reachability of each publishing rule's target: a periodic TCP connect per rule, as HAProxy's `check` does.

One `TargetProbe` per rule connects to the rule's current target every `interval` seconds (with
the rule's `connect_timeout`, capped at the interval) and closes the connection at once. Like
HAProxy's health checks (`inter 2s rise 2 fall 3`), a target turns down after `fall` failed
checks in a row and up again after `rise` good ones; the first check decides the initial state.
Each transition is one log line (`publish.target_down` / `publish.target_up`). /health reads
the stored state: a request never opens a connection to a target.

The checks run only while `TargetHealthService` runs (started and stopped with the gateway).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .rules import PublishRule

log = Logger()

INTERVAL = 10.0  # seconds between checks of one target
RISE = 2  # good checks in a row that bring a down target up (HAProxy's default)
FALL = 3  # failed checks in a row that take an up target down (HAProxy's default)


class _Close(Protocol):
    """Connected: the check has succeeded; close without sending anything."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


def _reason(failure: Failure) -> str:
    if failure.check(error.ConnectionRefusedError):
        return "refused"
    if failure.check(error.TimeoutError, defer.TimeoutError, defer.CancelledError):
        return "timeout"
    if failure.check(error.DNSLookupError):
        return "dns"
    return type(failure.value).__name__


class TargetProbe:
    """The check state of one rule's target: `up` is None until the first check has finished."""

    def __init__(self, rule: PublishRule, reactor: Any, interval: float = INTERVAL, rise: int = RISE,
                 fall: int = FALL) -> None:
        self.rule, self.reactor = rule, reactor
        self.interval, self.rise, self.fall = interval, rise, fall
        self.up: Optional[bool] = None
        self.detail = "not checked yet"
        self.checked_at: Optional[float] = None
        self.changed_at: Optional[float] = None
        self._streak = 0  # consecutive results that disagree with `up`
        self._loop: Optional[LoopingCall] = None
        self._pending: Optional[defer.Deferred[Any]] = None
        self._target = rule.settings.target

    def check(self) -> "defer.Deferred[Any]":
        """One TCP connect to the rule's target now (the target of a reload is picked up at the next check)."""
        settings = self.rule.settings
        if settings.target != self._target:  # a reload moved the rule: the old target's state says nothing
            self._target, self.up, self.detail, self._streak = settings.target, None, "not checked yet", 0
        timeout = max(0.1, min(settings.connect_timeout, self.interval))
        endpoint = HostnameEndpoint(self.reactor, settings.target_host, settings.target_port, timeout=timeout)
        d = endpoint.connect(Factory.forProtocol(_Close))
        d.addTimeout(timeout + 1.0, self.reactor)  # name resolution is not covered by the connect timeout
        self._pending = d
        d.addCallbacks(self._done, self._done, callbackArgs=(d,), errbackArgs=(d,))
        return d

    def _done(self, result: Any, d: "defer.Deferred[Any]") -> None:
        if self._pending is not d:
            return  # cancelled by stop(): not a result
        self._pending = None
        if isinstance(result, Failure):
            self._result(False, _reason(result))
        else:
            self._result(True, "reachable")

    def _result(self, ok: bool, detail: str) -> None:
        now = self.reactor.seconds()
        self.checked_at = now
        if self.up is None:
            self._set(ok, detail, now)
            return
        if ok == self.up:
            self._streak, self.detail = 0, detail
            return
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self._set(ok, detail, now)

    def _set(self, ok: bool, detail: str, now: float) -> None:
        self.up, self.detail, self.changed_at, self._streak = ok, detail, now, 0
        target = self.rule.settings.target
        if ok:
            log.info("publish rule {rule}: target {target} is up", rule=self.rule.name, target=target,
                     event="publish.target_up")
        else:
            log.warn("publish rule {rule}: target {target} is down ({reason})", rule=self.rule.name, target=target,
                     reason=detail, event="publish.target_down")

    def start(self) -> None:
        if self._loop is None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True).addErrback(
                lambda f: log.failure("publish target check stopped", f, event="publish.check_error"))

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()  # no connection attempt outlives the service

    def report(self) -> dict[str, Any]:
        """The /health entry of this rule: ok is None before the first check."""
        entry: dict[str, Any] = {"name": f"publish.{self.rule.name}", "target": self.rule.settings.target,
                                 "ok": self.up, "detail": self.detail}
        if self.checked_at is not None:
            entry["checked_seconds_ago"] = round(max(0.0, self.reactor.seconds() - self.checked_at), 1)
        return entry


class TargetHealthService(Service):
    """Runs one TargetProbe per publishing rule while the gateway runs."""

    def __init__(self, rules: Iterable[PublishRule], reactor: Any, interval: float = INTERVAL) -> None:
        self.probes = {rule.name: TargetProbe(rule, reactor, interval) for rule in rules}

    def startService(self) -> None:
        super().startService()
        for probe in self.probes.values():
            probe.start()

    def stopService(self) -> None:
        super().stopService()
        for probe in self.probes.values():
            probe.stop()

    def report(self) -> list[dict[str, Any]]:
        return [self.probes[name].report() for name in sorted(self.probes)]
