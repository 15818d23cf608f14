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
    twistd daemonises) and stop at reactor shutdown. Constructing one touches no reactor state
    (the shutdown trigger is added on first use), so a reload may build backends in a worker thread.
    """

    def __init__(self, reactor: Any, name: str, maxthreads: int = 4, max_pending: int = 512) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=maxthreads, name=name)
        self._sem = DeferredSemaphore(maxthreads)
        self.max_pending = max_pending
        self._trigger: Any = None
        self.retired = False

    def stop(self) -> None:
        """Stop the pool's threads (joins them; each blocking call must have its own timeout)."""
        if self.pool.started:
            self.pool.stop()

    def _forget_trigger(self) -> None:
        if self._trigger is not None:
            self.reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None

    def close(self) -> None:
        """Stop now and forget the shutdown trigger (tests)."""
        self._forget_trigger()
        self.stop()

    def retire(self) -> "Deferred[None]":
        """A reload replaced this runner's backend: refuse new work, stop the pool off the reactor.

        Calls already running finish (their results still arrive); a call made later fails at once
        with AuthUnavailable. The join happens in a thread of the reactor's pool, since a pool
        thread may be inside an LDAP call for up to its timeout. Fires when the threads are gone.
        """
        self.retired = True
        self._forget_trigger()
        if not self.pool.started:
            return succeed(None)
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.pool.stop)

    def run(self, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> "Deferred[_R]":
        """Deferred result of `fn(*args, **kwargs)` in a pool thread."""
        if self.retired:
            return fail(AuthUnavailable(detail=f"{self.pool.name}: replaced by a configuration reload"))
        if not self.pool.started:
            if self._trigger is None:
                self._trigger = self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
            self.pool.start()
        if len(self._sem.waiting) >= self.max_pending:
            return fail(AuthUnavailable(detail=f"{self.pool.name}: too many queued requests"))
        return self._sem.run(deferToThreadPool, self.reactor, self.pool, fn, *args, **kwargs)
