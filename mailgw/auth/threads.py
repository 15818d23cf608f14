"""A named, bounded thread pool for blocking auth work (LDAP calls, password hashing)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from mailgw.errors import AuthUnavailable

_R = TypeVar("_R")


class BlockingRunner:
    """Runs blocking callables on its own ThreadPool, never the reactor's shared one.

    At most `maxthreads` calls run at once; at most `max_pending` more wait. Beyond that a call
    fails at once with AuthUnavailable, so a login flood cannot queue without limit
    (ThreadPool's own backlog is unbounded). The threads start on first use (so never before
    twistd daemonises) and stop at reactor shutdown.
    """

    def __init__(self, reactor: Any, name: str, maxthreads: int = 4, max_pending: int = 512) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=maxthreads, name=name)
        self._sem = DeferredSemaphore(maxthreads)
        self.max_pending = max_pending
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        """Stop the pool's threads (joins them; each blocking call must have its own timeout)."""
        if self.pool.started:
            self.pool.stop()

    def close(self) -> None:
        """Stop now and forget the shutdown trigger (tests)."""
        self.reactor.removeSystemEventTrigger(self._trigger)
        self.stop()

    def run(self, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> "Deferred[_R]":
        """Deferred result of `fn(*args, **kwargs)` in a pool thread."""
        if not self.pool.started:
            self.pool.start()
        if len(self._sem.waiting) >= self.max_pending:
            return fail(AuthUnavailable(detail=f"{self.pool.name}: too many queued requests"))
        return self._sem.run(deferToThreadPool, self.reactor, self.pool, fn, *args, **kwargs)
