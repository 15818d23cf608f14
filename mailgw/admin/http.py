"""The loopback HTTP admin endpoint: `/health` (JSON, 200 or 503) and `/metrics` (Prometheus text).

Security (security.md G37): GET and HEAD only (any other method is 405, also those twisted.web
would answer 501), no tracebacks, no secrets (listener labels, addresses and backend
names only), header limits from `HTTPChannel` (a header block over 16 KiB: 400; a line over
16 KiB: 431; the connection is closed either way), and a 60 s idle timeout against slow headers.

Health checks are zero-argument callables returning `(name, ok, detail)` or a Deferred of it
(the `gateway.health_checks` hook); a check that raises or takes longer than `check_timeout`
counts as down. `targets` returns the publishing rules' last periodic reachability results
(mailgw.publish.health): a down target makes the status "degraded" (still 200), never "down".
"""

from __future__ import annotations

import functools
import json
import types
from typing import Any, Callable, Iterable, Optional

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.http import HTTPChannel
from twisted.web.server import NOT_DONE_YET, Request, Site

from mailgw.interfaces import ListenerState

log = Logger()

HealthCheck = Callable[[], Any]  # -> (name, ok, detail) | Deferred[(name, ok, detail)]


def _check_name(check: HealthCheck) -> str:
    """A check's name for the log (it failed, so it named nothing): its function's, or its class's."""
    func = check.func if isinstance(check, functools.partial) else check
    return func.__name__ if isinstance(func, (types.FunctionType, types.MethodType)) else type(func).__name__


class HealthReport:
    """Collects listener states and backend checks into one JSON-able report."""

    def __init__(self, listeners: Callable[[], Iterable[ListenerState]], checks: Callable[[], Iterable[HealthCheck]],
                 reactor: Any, check_timeout: float = 5.0,
                 targets: Optional[Callable[[], Iterable[dict[str, Any]]]] = None) -> None:
        self._listeners = listeners
        self._checks = checks
        self._targets = targets
        self.reactor = reactor
        self.check_timeout = check_timeout

    def _listener_states(self) -> list[dict[str, Any]]:
        out = []
        for state in self._listeners():
            entry: dict[str, Any] = {"name": state.label, "ok": state.bound}
            if state.address is not None:
                entry["address"] = state.address
            else:
                entry["detail"] = "not bound"
            out.append(entry)
        return out

    def _run(self, check: HealthCheck) -> "defer.Deferred[dict[str, Any]]":
        d = defer.maybeDeferred(check)
        d.addTimeout(self.check_timeout, self.reactor)

        def done(result: tuple[str, bool, Any]) -> dict[str, Any]:
            name, ok, detail = result
            return {"name": str(name), "ok": bool(ok), "detail": detail}

        def failed(failure: Any) -> dict[str, Any]:
            name = _check_name(check)
            reason = "timeout" if failure.check(defer.TimeoutError) else type(failure.value).__name__
            log.warn("health check {name} failed: {reason}", name=name, reason=reason, event="health.check_failed")
            return {"name": str(name), "ok": False, "detail": reason}

        return d.addCallbacks(done, failed)

    def report(self) -> "defer.Deferred[dict[str, Any]]":
        listeners = self._listener_states()
        d = defer.gatherResults([self._run(c) for c in self._checks()])

        targets = [dict(t) for t in self._targets()] if self._targets is not None else []

        def assemble(backends: list[dict[str, Any]]) -> dict[str, Any]:
            ok = all(x["ok"] for x in listeners) and all(x["ok"] for x in backends)
            # A publishing target that fails its periodic connect check (ok False; None = not checked
            # yet) degrades the report but keeps 200, as an HAProxy server going DOWN leaves HAProxy
            # itself up: the gateway still serves everything else, and restarting it cannot fix the target.
            status = "down" if not ok else "degraded" if any(t.get("ok") is False for t in targets) else "ok"
            return {"status": status, "listeners": listeners, "backends": backends, "publish": targets}

        return d.addCallback(assemble)


class ReadOnlyResource(Resource):
    """GET and HEAD only: every other method, known to twisted.web or not, is 405 with an Allow header."""

    def render(self, request: Request) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"method not allowed\n"
        return super().render(request)


class HealthResource(ReadOnlyResource):
    isLeaf = True

    def __init__(self, health: HealthReport) -> None:
        super().__init__()
        self.health = health

    def render_GET(self, request: Request) -> Any:  # noqa: N802
        def respond(report: dict[str, Any]) -> None:
            if request.finished or request._disconnected:  # type: ignore[attr-defined]
                return
            request.setResponseCode(503 if report["status"] == "down" else 200)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            body = json.dumps(report, sort_keys=True, default=str).encode() + b"\n"
            request.setHeader(b"content-length", str(len(body)).encode())
            request.write(body)
            request.finish()

        self.health.report().addCallback(respond).addErrback(
            lambda f: log.failure("health report failed", f, event="health.error"))
        return NOT_DONE_YET


class MetricsResource(ReadOnlyResource):
    """Prometheus text exposition of `registry`; `refresh()` runs first to set scrape-time gauges."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, refresh: Optional[Callable[[], None]] = None) -> None:
        super().__init__()
        self.registry = registry
        self.refresh = refresh

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        if self.refresh is not None:
            try:
                self.refresh()
            except Exception:
                log.failure("metrics refresh failed", event="metrics.refresh_failed")
        # Classic text format (0.0.4) unless the scraper asks for OpenMetrics.
        encoder, content_type = choose_encoder((request.getHeader(b"accept") or b"").decode("latin-1"))
        request.setHeader(b"content-type", content_type.encode())
        return encoder(self.registry)


class AdminRoot(ReadOnlyResource):
    def __init__(self, health: HealthReport, metrics: MetricsResource) -> None:
        super().__init__()
        self.putChild(b"health", HealthResource(health))
        self.putChild(b"metrics", metrics)

    def getChild(self, path: bytes, request: Request) -> Any:  # noqa: N802
        return notFound() if path else self

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"mailgw admin: /health /metrics\n"


class AdminChannel(HTTPChannel):
    """HTTP/1.1 only; a request or header line over 16 KiB gets 431 and a close, not a silent drop."""

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 (LineReceiver's name)
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n")
        self.transport.loseConnection()


def admin_site(health: HealthReport, metrics: MetricsResource, timeout: float = 60.0) -> Site:
    site = Site(AdminRoot(health, metrics), timeout=timeout)
    site.protocol = AdminChannel  # type: ignore[method-assign,assignment]  # HTTP/1.1 only, our line limit
    site.displayTracebacks = False
    site.noisy = False
    return site
