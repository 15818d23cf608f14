"""The reactor-side backend of one Maildir folder: serialises disk jobs, applies their deltas, notifies views.

Disk work runs in the store's thread pool through a per-folder DeferredLock; the reactor
thread only applies the resulting MessageInfo deltas, so it never fsyncs or scans. Reads of
message files and of the header cache are jobs behind the same lock: `self.disk` (UID list,
index records, header cache) is only ever touched by one job at a time, never by the reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.logger import Logger

from mailgw.errors import NoSuchMailbox
from mailgw.interfaces import CopyResult, IMessageBody, MessageFile
from mailgw.store.body import BytesBody, FileBody
from mailgw.store.maildir.disk import Delta, FolderDisk
from mailgw.store.maildir.layout import is_maildir
from mailgw.store.maildir.transfer import transfer
from mailgw.store.view import FolderBackend, FolderView, notify_views

if TYPE_CHECKING:
    from mailgw.store.maildir.account import MaildirAccount

log = Logger()
T = TypeVar("T")
PRELOAD = 256 * 1024  # messages up to this size are read whole by the job that opens them


class MaildirFolder(FolderBackend):
    def __init__(self, account: "MaildirAccount", name: str, path: str) -> None:
        super().__init__()
        self.account = account
        self.name = name
        self.path = path
        store = account.store
        self.disk = FolderDisk(path, name, store.hostname, store.writer, store.header_cap)
        self.lock = DeferredLock()
        self.uid_validity = 0
        self.uid_next = 1
        self.recent_floor = 1
        self._poll: Any = None

    # -- plumbing

    def locked(self, f: Callable[..., T], *args: Any) -> "Deferred[T]":
        """Run a blocking disk job in the pool, after every earlier job on this folder."""
        return self.lock.run(self.account.store.run, f, *args)

    def apply(self, delta: Delta, origin: Optional[FolderView] = None) -> None:
        """Publish a disk job's result to the views (and count it for the quota)."""
        current = self._infos  # read-only here; put/drop do the copy-on-write
        if delta.reset:
            nbytes = nmsgs = 0
            if self.loaded:  # a reload (UIDVALIDITY changed or the UID list was replaced)
                new = {i.uid: i for i in delta.put}
                nbytes = sum(i.size for u, i in new.items() if u not in current) - sum(
                    i.size for u, i in current.items() if u not in new)
                nmsgs = len(new.keys() - current.keys()) - len(current.keys() - new.keys())
            changed = bool(current) or bool(delta.put)
            self.replace_all(delta.put)
        else:
            nbytes = sum(i.size for i in delta.put if i.uid not in current)
            nmsgs = sum(1 for i in delta.put if i.uid not in current)
            nbytes -= sum(current[u].size for u in delta.drop if u in current)
            nmsgs -= sum(1 for u in delta.drop if u in current)
            changed = bool(delta.put or delta.drop)
            for info in delta.put:
                self.put(info)
            for uid in delta.drop:
                self.drop(uid)
        self.uid_validity = delta.uid_validity
        self.uid_next = max(self.uid_next, delta.uid_next)
        self.recent_floor = delta.recent_floor
        if self.loaded:
            self.account.count(nbytes, nmsgs)  # the first load is already in the account's usage
        self.loaded = True
        self.last_used = self.account.store.reactor.seconds()
        if changed and self.views:
            notify_views(self, origin)

    loaded = False  # the first delta (the whole folder) has been applied
    last_used = 0.0  # reactor.seconds() of the last applied job

    def _check_exists(self) -> None:
        if not is_maildir(self.path):
            raise NoSuchMailbox(detail=self.name)

    # -- FolderBackend

    def sync(self) -> "Deferred[None]":
        return ensureDeferred(self._sync())

    async def _sync(self) -> None:
        def job() -> Delta:
            self._check_exists()
            delta = self.disk.sync()
            self.disk.flush()
            return delta

        self.apply(await self.locked(job))
        self._start_polling()

    def claim_recent(self) -> "Deferred[frozenset[int]]":
        return ensureDeferred(self._claim())

    async def _claim(self) -> frozenset[int]:
        if self.loaded and self.recent_floor >= self.uid_next:
            return frozenset()  # nothing new since the last claim: no disk job
        delta, claimed = await self.locked(self.disk.claim_recent)
        self.apply(delta)
        return claimed

    def store_flags(self, uids: list[int], flags: frozenset[str], mode: str, origin: FolderView) -> "Deferred[dict[int, frozenset[str]]]":
        return ensureDeferred(self._store(uids, flags, mode, origin))

    async def _store(self, uids: list[int], flags: frozenset[str], mode: str, origin: FolderView) -> dict[int, frozenset[str]]:
        delta, result = await self.locked(self.disk.store, uids, flags, mode)
        self.apply(delta, origin)
        return result

    def expunge(self, uids: list[int], origin: FolderView) -> "Deferred[list[int]]":
        return ensureDeferred(self._expunge(uids, origin))

    async def _expunge(self, uids: list[int], origin: FolderView) -> list[int]:
        if not uids:
            return []
        delta = await self.locked(self.disk.expunge, uids)
        self.apply(delta, origin)
        return list(delta.drop)

    def copy(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        return ensureDeferred(self._transfer(uids, destination, None, False))

    def move(self, uids: list[int], destination: str, origin: Optional[FolderView]) -> "Deferred[CopyResult]":
        return ensureDeferred(self._transfer(uids, destination, origin, True))

    async def _transfer(self, uids: list[int], destination: str, origin: Optional[FolderView], move: bool) -> CopyResult:
        dest = self.account.folder(destination)
        current = self.current()
        if not move:
            await self.account.check_quota(sum(current[u].size for u in uids if u in current),
                                           sum(1 for u in uids if u in current))
        if not dest.loaded:
            await dest.sync()
        folders = sorted({id(self): self, id(dest): dest}.values(), key=lambda f: f.path)
        for f in folders:
            await f.lock.acquire()
        try:
            def job() -> tuple[Delta, Delta, CopyResult]:
                dest._check_exists()
                return transfer(self.disk, dest.disk, uids, move)

            src_delta, dst_delta, result = await self.account.store.run(job)
        finally:
            for f in reversed(folders):
                f.lock.release()
        self.apply(src_delta, origin)
        dest.apply(dst_delta)
        return result

    def deliver(self, data: "bytes | MessageFile", letters: Optional[str], mtime: Optional[float],
                keywords: frozenset[str] = frozenset()) -> "Deferred[Delta]":
        return ensureDeferred(self._deliver(data, letters, mtime, keywords))

    async def _deliver(self, data: "bytes | MessageFile", letters: Optional[str], mtime: Optional[float],
                       keywords: frozenset[str]) -> Delta:
        if not self.loaded:
            await self.sync()

        def job() -> Delta:
            self._check_exists()
            return self.disk.deliver(data, letters, mtime, keywords)

        delta = await self.locked(job)
        self.apply(delta)
        return delta

    def open_bodies(self, uids: list[int]) -> "Deferred[dict[int, IMessageBody]]":
        d = self.locked(self.disk.open_many, uids, PRELOAD)
        return d.addCallback(self._bodies)  # type: ignore[return-value]  # addCallback's type does not follow the callback

    def _bodies(self, opened: "dict[int, bytes | tuple[Any, int]]") -> "dict[int, IMessageBody]":
        run = self.account.store.run
        return {uid: BytesBody(v) if isinstance(v, bytes) else FileBody(v[0], v[1], run)
                for uid, v in opened.items()}

    def read_headers(self, uids: list[int]) -> "Deferred[dict[int, bytes]]":
        return self.locked(self.disk.read_headers, uids)

    # -- lifecycle

    def view_closed(self, view: FolderView) -> None:
        if not self.views:
            self.stop_polling()
            self.locked(self.disk.flush, True).addErrback(
                lambda f: log.failure("index flush failed", f, event="store.index_save_failed"))

    def view_listening(self, view: FolderView) -> None:
        self._start_polling()

    def _start_polling(self) -> None:
        interval = self.account.store.poll_interval
        if self._poll is None and interval and any(v._listeners for v in self.views):
            self._poll = self.account.store.reactor.callLater(interval, self._polled)

    def stop_polling(self) -> None:
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None

    def _polled(self) -> None:
        """Look for changes by other programs while sessions idle (IMAP IDLE hears of them this way)."""
        self._poll = None
        if not self.views:
            return
        self.sync().addErrback(lambda f: log.failure("folder poll failed", f, event="store.poll_failed"))

    def close(self) -> "Deferred[None]":
        self.stop_polling()
        return self.locked(self.disk.close)
