"""StoreService: saves a store's indexes at shutdown (register it after the disk pool's service)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed


class StoreService(Service):
    """MultiService stops children in reverse order: added after the pool, this stops before it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._closed: "Deferred[None] | None" = None

    def stopService(self) -> "Deferred[None]":  # noqa: N802 (Twisted API)
        super().stopService()  # type: ignore[no-untyped-call]
        self._closed = Deferred()
        d: Deferred[None] = self.store.close()
        d.addBoth(self._done)
        return d

    def _done(self, result: Any) -> Any:
        assert self._closed is not None
        self._closed.callback(None)
        return result

    def closed(self) -> "Deferred[None]":
        """Fires once the store has closed (its last jobs ran): the disk pool may stop then, not before.

        MultiService stops its children at once without waiting: a pool stopped while a folder's
        lock holder is still queued drops that job, and the close would wait for the lock forever.
        """
        if self._closed is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()

        def release(result: Any) -> Any:
            waiter.callback(None)
            return result

        self._closed.addBoth(release)
        return waiter
