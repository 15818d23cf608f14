"""Local delivery for submission and the relay: address -> user (IAuthService.lookup) -> IMessageStore.deliver."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailgw.errors import MailError, QuotaExceeded
from mailgw.interfaces import AppendResult, IAuthService, IMessageStore, MessageFile
from mailgw.observe import metrics


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class LocalDelivery:
    """Resolves local recipients and delivers a spooled message into their INBOX."""

    def __init__(self, auth: IAuthService, store: IMessageStore, reactor: Any, pool: ThreadPool) -> None:
        self.auth, self.store, self.reactor, self.pool = auth, store, reactor, pool
        # The `store` label of mailgw_store_deliveries_total: "maildir" (MaildirStore), "memory" (MemoryStore).
        self.store_label = type(store).__name__.removesuffix("Store").lower() or "store"

    def resolve(self, address: str) -> "Deferred[Optional[str]]":
        """Canonical user id of a local address, or None if nobody has it."""
        d = self.auth.lookup(address)
        return d.addCallback(lambda ident: ident.user if ident is not None else None)

    def read(self, path: str) -> "Deferred[bytes]":
        return deferToThreadPool(self.reactor, self.pool, _read, path)

    def deliver(self, user: str, message: "bytes | MessageFile") -> "Deferred[AppendResult]":
        """Every local delivery (submission's and the relay runner's) passes here: counted per store and result."""
        d = self.store.deliver(user, message)
        d.addBoth(self._count)
        return d

    def _count(self, result: Any) -> Any:
        if isinstance(result, Failure):
            outcome = ("quota" if result.check(QuotaExceeded) else
                       "temporary" if isinstance(result.value, MailError) and result.value.temporary else "failed")
        else:
            outcome = "ok"
        metrics.store_deliveries_total.labels(store=self.store_label, result=outcome).inc()
        return result

    async def deliver_file(self, address: str, path: str) -> AppendResult:
        """Relay-side delivery of a queued message to one local address (NoSuchMailbox if unknown)."""
        from mailgw.errors import NoSuchMailbox

        user = await self.resolve(address)
        if user is None:
            raise NoSuchMailbox(detail=f"no local user for {address}")
        return await self.deliver(user, MessageFile(path=path))  # the store copies the file in chunks
