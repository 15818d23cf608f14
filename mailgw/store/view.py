"""The session view of an open folder (IFolder), shared by the in-memory and the Maildir store.

A view keeps its own snapshot of uids and flags, so sequence numbers only move when the
session calls refresh(); the backend (one per folder per process) holds the truth and tells
the other views' listeners when something changes.
"""

from __future__ import annotations

from typing import IO, Optional, Protocol

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from mailgw.errors import MessageExpunged, ReadOnlyFolder
from mailgw.interfaces import CopyResult, FolderChanges, IFolder, IFolderListener, MessageInfo
from mailgw.store.flags import DELETED, MODES, normalize_flags

log = Logger()


class FolderBackend(Protocol):
    """What a store implements once per folder for the views to share."""

    name: str
    uid_validity: int
    uid_next: int
    recent_floor: int  # uids >= this are \Recent and not yet claimed by a read-write session
    views: "set[FolderView]"

    def current(self) -> dict[int, MessageInfo]: ...

    def sync(self) -> "Deferred[None]": ...

    def claim_recent(self) -> "Deferred[frozenset[int]]": ...

    def store_flags(self, uids: list[int], flags: frozenset[str], mode: str, origin: "FolderView") -> "Deferred[dict[int, frozenset[str]]]": ...

    def copy(self, uids: list[int], destination: str) -> "Deferred[CopyResult]": ...

    def move(self, uids: list[int], destination: str, origin: "FolderView") -> "Deferred[CopyResult]": ...

    def expunge(self, uids: list[int], origin: "FolderView") -> "Deferred[list[int]]": ...

    def open_message(self, uid: int) -> IO[bytes]: ...

    def header_bytes(self, uid: int) -> bytes: ...


def notify_views(backend: FolderBackend, origin: "Optional[FolderView]") -> None:
    """Tell every view but `origin` that the folder changed."""
    for view in list(backend.views):
        if view is not origin:
            view.notify()


@implementer(IFolder)
class FolderView:
    """One session's SELECT or EXAMINE of a folder."""

    def __init__(self, backend: FolderBackend, readonly: bool) -> None:
        self._backend = backend
        self.name: str = backend.name
        self.readonly: bool = readonly
        self.uid_validity: int = backend.uid_validity
        self.uid_next: int = backend.uid_next
        self._infos: dict[int, MessageInfo] = {}
        self._sorted: Optional[list[MessageInfo]] = None
        self._recent: set[int] = set()
        self._listeners: list[IFolderListener] = []
        self._closed = False

    # -- opening

    def start(self) -> "Deferred[FolderView]":
        """Take the first snapshot (and claim \\Recent for a read-write session)."""
        self._backend.views.add(self)
        return ensureDeferred(self._start())

    async def _start(self) -> "FolderView":
        try:
            await self._backend.sync()
            claimed = await self._claim()
        except BaseException:
            self._backend.views.discard(self)
            raise
        return self._first_snapshot(claimed)

    def _claim(self) -> "Deferred[frozenset[int]]":
        if self.readonly:
            floor = self._backend.recent_floor
            return succeed(frozenset(u for u in self._backend.current() if u >= floor))
        return self._backend.claim_recent()

    def _first_snapshot(self, claimed: frozenset[int]) -> "FolderView":
        self._infos = dict(self._backend.current())
        self._sorted = None
        self.uid_next = self._backend.uid_next
        self._recent = set(claimed) & set(self._infos)
        return self

    # -- reading

    def messages(self) -> list[MessageInfo]:
        if self._sorted is None:
            self._sorted = [self._infos[u] for u in sorted(self._infos)]
        return list(self._sorted)

    def recent_uids(self) -> frozenset[int]:
        return frozenset(self._recent)

    def open_message(self, uid: int) -> IO[bytes]:
        self._known(uid)
        return self._backend.open_message(uid)

    def header_bytes(self, uid: int) -> bytes:
        self._known(uid)
        return self._backend.header_bytes(uid)

    def _known(self, uid: int) -> None:
        if uid not in self._infos:
            raise MessageExpunged(detail=f"uid {uid} not in view of {self.name}")

    # -- refreshing

    def refresh(self) -> "Deferred[FolderChanges]":
        return ensureDeferred(self._refresh())

    async def _refresh(self) -> FolderChanges:
        await self._backend.sync()
        return self._diff(await self._claim())

    def _diff(self, claimed: frozenset[int]) -> FolderChanges:
        current = self._backend.current()
        expunged = tuple(sorted(u for u in self._infos if u not in current))
        added = tuple(sorted(u for u in current if u not in self._infos))
        changed: dict[int, frozenset[str]] = {}
        for uid, info in current.items():
            old = self._infos.get(uid)
            if old is not None and old.flags != info.flags:
                changed[uid] = info.flags
        if self.readonly:
            self._recent |= set(u for u in added if u in claimed)
        else:
            self._recent |= set(claimed)
        self._infos = dict(current)
        self._recent &= set(self._infos)
        self._sorted = None
        self.uid_next = max(self.uid_next, self._backend.uid_next)
        return FolderChanges(added=added, expunged=expunged, flags=changed)

    # -- changing

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnlyFolder()

    def store_flags(self, uids: list[int], flags: frozenset[str], mode: str) -> "Deferred[dict[int, frozenset[str]]]":
        return maybeDeferred(self._store_flags, uids, flags, mode)

    def _store_flags(self, uids: list[int], flags: frozenset[str], mode: str) -> "Deferred[dict[int, frozenset[str]]]":
        self._writable()
        if mode not in MODES:
            raise ValueError(f"unknown store mode {mode!r}")
        wanted = [u for u in sorted(set(uids)) if u in self._infos]
        d = self._backend.store_flags(wanted, normalize_flags(flags), mode, self)
        d.addCallback(self._stored)
        return d

    def _stored(self, result: dict[int, frozenset[str]]) -> dict[int, frozenset[str]]:
        for uid, new in result.items():
            old = self._infos.get(uid)
            if old is not None:
                self._infos[uid] = MessageInfo(uid=uid, flags=new, size=old.size, internal_date=old.internal_date)
        self._sorted = None
        return result

    def copy(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        wanted = [u for u in sorted(set(uids)) if u in self._infos]
        return maybeDeferred(self._backend.copy, wanted, destination)

    def move(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        return maybeDeferred(self._move, uids, destination)

    def _move(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        self._writable()
        wanted = [u for u in sorted(set(uids)) if u in self._infos]
        d = self._backend.move(wanted, destination, self)

        def moved(result: CopyResult) -> CopyResult:
            self._forget([src for src, _ in result.pairs])
            return result

        d.addCallback(moved)
        return d

    def expunge(self, uids: Optional[list[int]] = None) -> "Deferred[list[int]]":
        return maybeDeferred(self._expunge, uids)

    def _expunge(self, uids: Optional[list[int]]) -> "Deferred[list[int]]":
        self._writable()
        current = self._backend.current()
        pool = set(self._infos) if uids is None else set(uids) & set(self._infos)
        wanted = sorted(u for u in pool if u in current and DELETED in current[u].flags)
        d = self._backend.expunge(wanted, self)

        def expunged(gone: list[int]) -> list[int]:
            self._forget(gone)
            return gone

        d.addCallback(expunged)
        return d

    def _forget(self, uids: list[int]) -> None:
        for uid in uids:
            self._infos.pop(uid, None)
            self._recent.discard(uid)
        self._sorted = None

    # -- listening

    def add_listener(self, listener: IFolderListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: IFolderListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def notify(self) -> None:
        """Called by the backend: something changed through another view or another program."""
        for listener in list(self._listeners):
            try:
                listener.folder_changed(self)
            except Exception:
                log.failure("folder listener failed", event="store.listener_error")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend.views.discard(self)
            self._listeners.clear()
