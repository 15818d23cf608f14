"""StoreService: saves a store's indexes at shutdown (register it after the disk pool's service)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred


class StoreService(Service):
    """MultiService stops children in reverse order: added after the pool, this stops before it."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def stopService(self) -> "Deferred[None]":  # noqa: N802 (Twisted API)
        super().stopService()  # type: ignore[no-untyped-call]
        d: Deferred[None] = self.store.close()
        return d
