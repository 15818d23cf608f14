"""Local delivery for submission and the relay: address -> user (IAuthService.lookup) -> IMessageStore.deliver."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from mailgw.interfaces import AppendResult, IAuthService, IMessageStore, MessageFile


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class LocalDelivery:
    """Resolves local recipients and delivers a spooled message into their INBOX."""

    def __init__(self, auth: IAuthService, store: IMessageStore, reactor: Any, pool: ThreadPool) -> None:
        self.auth, self.store, self.reactor, self.pool = auth, store, reactor, pool

    def resolve(self, address: str) -> "Deferred[Optional[str]]":
        """Canonical user id of a local address, or None if nobody has it."""
        d = self.auth.lookup(address)
        d.addCallback(lambda ident: ident.user if ident is not None else None)
        return d

    def read(self, path: str) -> "Deferred[bytes]":
        return deferToThreadPool(self.reactor, self.pool, _read, path)

    def deliver(self, user: str, message: "bytes | MessageFile") -> "Deferred[AppendResult]":
        return self.store.deliver(user, message)

    async def deliver_file(self, address: str, path: str) -> AppendResult:
        """Relay-side delivery of a queued message to one local address (NoSuchMailbox if unknown)."""
        from mailgw.errors import NoSuchMailbox

        user = await self.resolve(address)
        if user is None:
            raise NoSuchMailbox(detail=f"no local user for {address}")
        return await self.deliver(user, MessageFile(path=path))  # the store copies the file in chunks
