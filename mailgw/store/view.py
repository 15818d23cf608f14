"""The session view of an open folder (IFolder), shared by the in-memory and the Maildir store.

The backend (one per folder per process) holds the current messages in a copy-on-write
dict (ascending uid order) and a log of changed uids. A view keeps a reference to the dict
it last saw plus an overlay of its own changes, so opening a view and refreshing it cost
O(changes), never O(messages); sequence numbers only move when the session calls refresh().

All of this lives on the reactor thread and holds only immutable values (MessageInfo, tuples);
reading message files and the store's own bookkeeping is the backend's job, through Deferreds.
"""

from __future__ import annotations

from typing import Iterable, Optional, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from mailgw.errors import MessageExpunged, ReadOnlyFolder
from mailgw.interfaces import CopyResult, FolderChanges, IFolder, IFolderListener, IMessageBody, MessageInfo
from mailgw.store.flags import DELETED, MODES, normalize_flags

log = Logger()
T = TypeVar("T")


def uids_from(infos: dict[int, MessageInfo], floor: int) -> frozenset[int]:
    """Uids >= floor of an ascending mapping, walking from the top (O(result))."""
    out = []
    for uid in reversed(infos):
        if uid < floor:
            break
        out.append(uid)
    return frozenset(out)


class FolderState:
    """Current messages of one folder and the change log that views diff against."""

    def __init__(self) -> None:
        self.views: set[FolderView] = set()
        self._infos: dict[int, MessageInfo] = {}
        self._shared = False
        self._log: list[int] = []
        self._log_start = 0
        self._snap: Optional[tuple[dict[int, MessageInfo], tuple[MessageInfo, ...], tuple[int, ...]]] = None

    def snapshot(self, infos: dict[int, MessageInfo]) -> tuple[tuple[MessageInfo, ...], tuple[int, ...]]:
        """(messages, uids) of a mapping handed out by current(), as tuples shared by every view holding it.

        Such a mapping is never changed again (put/drop copy it first), so one pair of tuples
        serves all sessions that selected the folder: with 1,000 sessions on a 10,000-message
        INBOX that is 160 MB less than one pair each.
        """
        snap = self._snap
        if snap is None or snap[0] is not infos:
            snap = self._snap = (infos, tuple(infos.values()), tuple(infos))
        return snap[1], snap[2]

    def current(self) -> dict[int, MessageInfo]:
        """The current messages; callers must treat the mapping as immutable."""
        self._shared = True
        return self._infos

    def position(self) -> int:
        return self._log_start + len(self._log)

    def changed_since(self, position: int) -> list[int]:
        return self._log[max(0, position - self._log_start):]

    def _mutable(self) -> dict[int, MessageInfo]:
        if self._shared:
            self._infos = dict(self._infos)
            self._shared = False
        return self._infos

    def put(self, info: MessageInfo) -> None:
        infos = self._mutable()
        if info.uid not in infos and infos and info.uid < next(reversed(infos)):
            infos[info.uid] = info
            self._infos = dict(sorted(infos.items()))
        else:
            infos[info.uid] = info
        self._log.append(info.uid)

    def drop(self, uid: int) -> None:
        if uid in self._infos:
            self._mutable().pop(uid)
            self._log.append(uid)

    def replace_all(self, infos: list[MessageInfo]) -> None:
        if any(a.uid >= b.uid for a, b in zip(infos, infos[1:])):
            infos = sorted(infos, key=lambda i: i.uid)
        new = {i.uid: i for i in infos}
        if self._infos:
            self._log.extend(self._infos.keys() | new.keys())
        else:
            self._log.extend(new)
        self._infos = new
        self._shared = False

    def trim_log(self) -> None:
        """Forget log entries every open view has already seen."""
        end = self.position()
        keep_from = min((v.log_position for v in self.views), default=end)
        if keep_from > self._log_start:
            del self._log[: keep_from - self._log_start]
            self._log_start = keep_from


class FolderBackend(FolderState):
    """What a store implements once per folder; views call these."""

    name: str
    uid_validity: int
    uid_next: int
    recent_floor: int  # uids >= this are \Recent and not yet claimed by a read-write session

    def sync(self) -> "Deferred[None]":
        raise NotImplementedError

    def claim_recent(self) -> "Deferred[frozenset[int]]":
        raise NotImplementedError

    def store_flags(self, uids: list[int], flags: frozenset[str], mode: str, origin: "FolderView") -> "Deferred[dict[int, frozenset[str]]]":
        raise NotImplementedError

    def copy(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        raise NotImplementedError

    def move(self, uids: list[int], destination: str, origin: "Optional[FolderView]") -> "Deferred[CopyResult]":
        raise NotImplementedError

    def expunge(self, uids: list[int], origin: "FolderView") -> "Deferred[list[int]]":
        raise NotImplementedError

    def open_bodies(self, uids: list[int]) -> "Deferred[dict[int, IMessageBody]]":
        """Open messages (small ones read ahead); uids that are gone are left out."""
        raise NotImplementedError

    def read_headers(self, uids: list[int]) -> "Deferred[dict[int, bytes]]":
        """Header blocks; uids that are gone are left out."""
        raise NotImplementedError

    def view_closed(self, view: "FolderView") -> None:
        """Hook: the last view closing may let the backend flush caches."""

    def view_listening(self, view: "FolderView") -> None:
        """Hook: a view has a listener now (the backend may start watching for other programs)."""


def notify_views(backend: FolderState, origin: "Optional[FolderView]") -> None:
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
        self.log_position = backend.position()
        self._base: dict[int, MessageInfo] = {}
        self._overlay: dict[int, Optional[MessageInfo]] = {}
        self._list: Optional[tuple[MessageInfo, ...]] = None
        self._recent: frozenset[int] = frozenset()  # replaced, never changed in place: handed out as is
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
        self._base = self._backend.current()
        self.log_position = self._backend.position()
        self.uid_validity = self._backend.uid_validity
        self.uid_next = self._backend.uid_next
        self._recent = frozenset(claimed)
        return self

    def _claim(self) -> "Deferred[frozenset[int]]":
        if self.readonly:
            return succeed(uids_from(self._backend.current(), self._backend.recent_floor))
        return self._backend.claim_recent()

    # -- reading

    def _info(self, uid: int) -> Optional[MessageInfo]:
        if uid in self._overlay:
            return self._overlay[uid]
        return self._base.get(uid)

    def messages(self) -> tuple[MessageInfo, ...]:
        if not self._overlay:
            return self._backend.snapshot(self._base)[0]
        if self._list is None:
            merged = [self._overlay.get(u, i) for u, i in self._base.items()]
            self._list = tuple(i for i in merged if i is not None)
        return self._list

    def uids(self) -> tuple[int, ...]:
        if not self._overlay:
            return self._backend.snapshot(self._base)[1]
        return tuple(m.uid for m in self.messages())

    def recent_uids(self) -> frozenset[int]:
        return self._recent

    def open_messages(self, uids: list[int]) -> "Deferred[dict[int, IMessageBody]]":
        known = [u for u in uids if self._info(u) is not None]
        return self._backend.open_bodies(known) if known else succeed({})

    def open_message(self, uid: int) -> "Deferred[IMessageBody]":
        return self.open_messages([uid]).addCallback(self._one, uid)

    def headers(self, uids: list[int]) -> "Deferred[dict[int, bytes]]":
        known = [u for u in uids if self._info(u) is not None]
        return self._backend.read_headers(known) if known else succeed({})

    def header_bytes(self, uid: int) -> "Deferred[bytes]":
        return self.headers([uid]).addCallback(self._one, uid)

    def _one(self, found: "dict[int, T]", uid: int) -> "T":
        if uid not in found:
            raise MessageExpunged(detail=f"uid {uid} of {self.name}")
        return found[uid]

    # -- refreshing

    def refresh(self) -> "Deferred[FolderChanges]":
        return ensureDeferred(self._refresh())

    async def _refresh(self) -> FolderChanges:
        await self._backend.sync()
        return self._diff(await self._claim())

    def _diff(self, claimed: frozenset[int]) -> FolderChanges:
        current = self._backend.current()
        touched = set(self._backend.changed_since(self.log_position)) | set(self._overlay)
        added, expunged, changed = [], [], {}
        for uid in touched:
            old, new = self._info(uid), current.get(uid)
            if old is None and new is not None:
                added.append(uid)
            elif old is not None and new is None:
                expunged.append(uid)
            elif old is not None and new is not None and old.flags != new.flags:
                changed[uid] = new.flags
        self._base = current
        self._overlay.clear()
        self._list = None
        self.log_position = self._backend.position()
        self._backend.trim_log()
        if self.readonly:
            recent = self._recent | (set(added) & claimed)
        else:
            recent = self._recent | claimed
        self._recent = recent - set(expunged) if expunged else recent
        self.uid_next = max(self.uid_next, self._backend.uid_next)
        # A replaced UID list (Maildir) changes UIDVALIDITY under an open session: the session
        # sees it here and must end the selection (RFC 3501 §2.3.1.1).
        self.uid_validity = self._backend.uid_validity
        return FolderChanges(added=tuple(sorted(added)), expunged=tuple(sorted(expunged)), flags=changed)

    # -- changing

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnlyFolder()

    def _held(self, uids: Iterable[int]) -> list[int]:
        return [u for u in sorted(set(uids)) if self._info(u) is not None]

    def store_flags(self, uids: list[int], flags: frozenset[str], mode: str) -> "Deferred[dict[int, frozenset[str]]]":
        return maybeDeferred(self._store_flags, uids, flags, mode)

    def _store_flags(self, uids: list[int], flags: frozenset[str], mode: str) -> "Deferred[dict[int, frozenset[str]]]":
        self._writable()
        if mode not in MODES:
            raise ValueError(f"unknown store mode {mode!r}")
        d = self._backend.store_flags(self._held(uids), normalize_flags(flags), mode, self)
        d.addCallback(self._stored)
        return d

    def _stored(self, result: dict[int, frozenset[str]]) -> dict[int, frozenset[str]]:
        for uid, new in result.items():
            old = self._info(uid)
            if old is not None:
                self._overlay[uid] = MessageInfo(uid=uid, flags=new, size=old.size, internal_date=old.internal_date)
        self._list = None
        return result

    def copy(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        return maybeDeferred(self._backend.copy, self._held(uids), destination)

    def move(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        return maybeDeferred(self._move, uids, destination)

    def _move(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        self._writable()
        d = self._backend.move(self._held(uids), destination, self)

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
        pool = (i.uid for i in self.messages()) if uids is None else self._held(uids)
        wanted = [u for u in pool if u in current and DELETED in current[u].flags]
        d = self._backend.expunge(wanted, self)

        def expunged(gone: list[int]) -> list[int]:
            self._forget(gone)
            return gone

        d.addCallback(expunged)
        return d

    def _forget(self, uids: list[int]) -> None:
        for uid in uids:
            self._overlay[uid] = None
        gone = self._recent.intersection(uids)
        if gone:
            self._recent = self._recent - gone
        self._list = None

    # -- listening

    def add_listener(self, listener: IFolderListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)
            self._backend.view_listening(self)

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
            self._listeners.clear()
            self._backend.views.discard(self)
            self._backend.trim_log()
            self._backend.view_closed(self)
