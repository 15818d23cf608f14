"""The in-memory message store: the reference implementation of IMessageStore and the test fake.

Behaves like the Maildir store (same name rules, SPECIAL-USE folders for new users, UIDs
ascending and never reused, \\Recent per session, listeners, quota), minus durability.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from zope.interface import implementer

from mailgw.errors import InvalidMailboxName, MailboxExists, NoSuchMailbox, QuotaExceeded
from mailgw.interfaces import (
    AppendResult,
    CopyResult,
    FolderInfo,
    FolderStatus,
    IAccount,
    IMessageBody,
    IMessageStore,
    MessageFile,
    MessageInfo,
    QuotaUsage,
)
from mailgw.store import names
from mailgw.store.body import BytesBody, read_source
from mailgw.store.flags import SEEN, apply_mode, header_block, normalize_flags
from mailgw.store.view import FolderBackend, FolderView, notify_views, uids_from


@dataclass
class _Stored:
    data: bytes
    flags: frozenset[str]
    internal_date: datetime

    def info(self, uid: int) -> MessageInfo:
        return MessageInfo(uid=uid, flags=self.flags, size=len(self.data), internal_date=self.internal_date)


class MemoryFolder(FolderBackend):
    """One folder's messages and UID counters, shared by all views of it."""

    def __init__(self, account: "MemoryAccount", name: str, uid_validity: int) -> None:
        super().__init__()
        self.account = account
        self.name = name
        self.uid_validity = uid_validity
        self.uid_next = 1
        self.recent_floor = 1
        self.stored: dict[int, _Stored] = {}

    def add(self, data: bytes, flags: frozenset[str], internal_date: datetime) -> int:
        uid = self.uid_next
        self.uid_next += 1
        self.stored[uid] = s = _Stored(data, flags, internal_date)
        self.put(s.info(uid))
        notify_views(self, None)
        return uid

    def remove(self, uids: list[int], origin: Optional[FolderView]) -> list[int]:
        gone = [u for u in uids if self.stored.pop(u, None) is not None]
        for uid in gone:
            self.drop(uid)
        if gone:
            notify_views(self, origin)
        return gone

    # -- FolderBackend

    def sync(self) -> "Deferred[None]":
        return succeed(None)

    def claim_recent(self) -> "Deferred[frozenset[int]]":
        claimed = uids_from(self.current(), self.recent_floor)
        self.recent_floor = self.uid_next
        return succeed(claimed)

    def store_flags(self, uids: list[int], flags: frozenset[str], mode: str, origin: FolderView) -> "Deferred[dict[int, frozenset[str]]]":
        result: dict[int, frozenset[str]] = {}
        changed = False
        for uid in uids:
            s = self.stored.get(uid)
            if s is None:
                continue
            new = apply_mode(s.flags, flags, mode)
            if new != s.flags:
                changed = True
                s.flags = new
                self.put(s.info(uid))
            result[uid] = new
        if changed:
            notify_views(self, origin)
        return succeed(result)

    def copy(self, uids: list[int], destination: str) -> "Deferred[CopyResult]":
        return maybeDeferred(self._copy, uids, destination)

    def _copy(self, uids: list[int], destination: str) -> CopyResult:
        dest = self.account.folder(destination)
        present = [u for u in uids if u in self.stored]
        self.account.check_quota(sum(len(self.stored[u].data) for u in present), len(present))
        pairs = []
        for uid in present:
            s = self.stored[uid]
            pairs.append((uid, dest.add(s.data, s.flags, s.internal_date)))
        return CopyResult(uid_validity=dest.uid_validity, pairs=tuple(pairs))

    def move(self, uids: list[int], destination: str, origin: Optional[FolderView]) -> "Deferred[CopyResult]":
        def moved(result: CopyResult) -> CopyResult:
            self.remove([src for src, _ in result.pairs], origin)
            return result

        # Moving within the account never changes the total, so no quota check.
        return maybeDeferred(self._move, uids, destination).addCallback(moved)

    def _move(self, uids: list[int], destination: str) -> CopyResult:
        dest = self.account.folder(destination)
        pairs = []
        for uid in uids:
            s = self.stored.get(uid)
            if s is not None:
                pairs.append((uid, dest.add(s.data, s.flags, s.internal_date)))
        return CopyResult(uid_validity=dest.uid_validity, pairs=tuple(pairs))

    def expunge(self, uids: list[int], origin: FolderView) -> "Deferred[list[int]]":
        return succeed(self.remove(uids, origin))

    # Messages are immutable bytes: a body handed out keeps them after an expunge, like an open file.
    def open_bodies(self, uids: list[int]) -> "Deferred[dict[int, IMessageBody]]":
        return succeed({u: BytesBody(self.stored[u].data) for u in uids if u in self.stored})

    def read_headers(self, uids: list[int]) -> "Deferred[dict[int, bytes]]":
        return succeed({u: header_block(self.stored[u].data) for u in uids if u in self.stored})


@implementer(IAccount)
class MemoryAccount:
    """One user's folders in memory."""

    def __init__(self, store: "MemoryStore", user: str) -> None:
        self.user = user
        self._store = store
        self._folders: dict[str, MemoryFolder] = {}
        self._subscribed: set[str] = set()
        for name in [names.INBOX, *names.SPECIAL_USE]:
            self._folders[name] = MemoryFolder(self, name, store.next_uid_validity())
            self._subscribed.add(name)

    def folder(self, name: str) -> MemoryFolder:
        """The folder of a name, or NoSuchMailbox."""
        canonical = names.normalize(name)
        f = self._folders.get(canonical)
        if f is None:
            raise NoSuchMailbox(detail=canonical)
        return f

    def check_quota(self, add_bytes: int, add_messages: int) -> None:
        usage = self.quota()
        if usage.bytes_limit is not None and usage.bytes_used + add_bytes > usage.bytes_limit:
            raise QuotaExceeded(detail=f"{self.user}: bytes")
        if usage.messages_limit is not None and usage.messages_used + add_messages > usage.messages_limit:
            raise QuotaExceeded(detail=f"{self.user}: messages")

    def list_folders(self) -> "Deferred[list[FolderInfo]]":
        existing = set(self._folders)
        everything = set(existing)
        for name in existing:
            everything.update(names.parent_names(name))
        parents = {p for n in everything for p in names.parent_names(n)}
        ordered = [names.INBOX] + sorted(n for n in everything if n != names.INBOX)
        return succeed([
            FolderInfo(
                name=n,
                special_use=names.special_use(n),
                has_children=n in parents,
                selectable=n in existing,
            )
            for n in ordered
        ])

    def create_folder(self, name: str) -> "Deferred[None]":
        return maybeDeferred(self._create, name)

    def _create(self, name: str) -> None:
        # RFC 3501 §6.3.3: a trailing separator only declares the name a parent.
        canonical = names.normalize(name[:-1] if name.endswith(names.SEPARATOR) and len(name) > 1 else name)
        if canonical in self._folders:
            raise MailboxExists(detail=canonical)
        for parent in names.parent_names(canonical):
            if parent not in self._folders:
                self._folders[parent] = MemoryFolder(self, parent, self._store.next_uid_validity())
        self._folders[canonical] = MemoryFolder(self, canonical, self._store.next_uid_validity())

    def delete_folder(self, name: str) -> "Deferred[None]":
        return maybeDeferred(self._delete, name)

    def _delete(self, name: str) -> None:
        canonical = names.normalize(name)
        if canonical == names.INBOX:
            raise NoSuchMailbox("Cannot delete INBOX", detail="INBOX")
        f = self.folder(canonical)
        del self._folders[canonical]
        f.remove(sorted(f.stored), None)

    def rename_folder(self, old: str, new: str) -> "Deferred[None]":
        return maybeDeferred(self._rename, old, new)

    def _rename(self, old: str, new: str) -> None:
        src, dst = names.normalize(old), names.normalize(new)
        source = self.folder(src)
        if dst in self._folders or dst == names.INBOX:
            raise MailboxExists(detail=dst)
        if names.is_inferior(dst, src):
            raise InvalidMailboxName("Invalid mailbox name: Cannot rename below itself", detail=dst)
        for parent in names.parent_names(dst):
            if parent not in self._folders:
                self._folders[parent] = MemoryFolder(self, parent, self._store.next_uid_validity())
        if src == names.INBOX:
            # RFC 3501 §6.3.5: INBOX's messages move to the new folder; INBOX stays, empty.
            target = MemoryFolder(self, dst, self._store.next_uid_validity())
            self._folders[dst] = target
            for uid in sorted(source.stored):
                s = source.stored[uid]
                target.add(s.data, s.flags, s.internal_date)
            source.remove(sorted(source.stored), None)
            return
        moving = [n for n in self._folders if n == src or names.is_inferior(n, src)]
        for n in sorted(moving):
            f = self._folders.pop(n)
            f.name = dst + n[len(src):]
            self._folders[f.name] = f

    def subscriptions(self) -> "Deferred[list[str]]":
        return succeed(sorted(self._subscribed))

    def subscribe(self, name: str) -> "Deferred[None]":
        return maybeDeferred(lambda: self._subscribed.add(names.normalize(name)))

    def unsubscribe(self, name: str) -> "Deferred[None]":
        return maybeDeferred(lambda: self._subscribed.discard(names.normalize(name)))

    def status(self, name: str) -> "Deferred[FolderStatus]":
        return maybeDeferred(self._status, name)

    def _status(self, name: str) -> FolderStatus:
        f = self.folder(name)
        return FolderStatus(
            messages=len(f.stored),
            recent=sum(1 for u in f.stored if u >= f.recent_floor),
            uid_next=f.uid_next,
            uid_validity=f.uid_validity,
            unseen=sum(1 for s in f.stored.values() if SEEN not in s.flags),
            size=sum(len(s.data) for s in f.stored.values()),
        )

    def open_folder(self, name: str, readonly: bool = False) -> "Deferred[FolderView]":
        try:
            f = self.folder(name)
        except Exception as e:
            return fail(e)
        return FolderView(f, readonly).start()

    def append(self, name: str, message: "bytes | MessageFile", flags: frozenset[str] = frozenset(),
               internal_date: Optional[datetime] = None) -> "Deferred[AppendResult]":
        return maybeDeferred(self._append, name, message, flags, internal_date)

    def _append(self, name: str, message: "bytes | MessageFile", flags: frozenset[str],
                internal_date: Optional[datetime]) -> AppendResult:
        f = self.folder(name)
        data = read_source(message)  # the reference store keeps bytes; it reads a file source whole
        self.check_quota(len(data), 1)
        when = internal_date if internal_date is not None else self._store.now()
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        uid = f.add(data, normalize_flags(flags), when)
        return AppendResult(uid_validity=f.uid_validity, uid=uid)

    def quota(self) -> QuotaUsage:
        used = sum(len(s.data) for f in self._folders.values() for s in f.stored.values())
        count = sum(len(f.stored) for f in self._folders.values())
        return QuotaUsage(bytes_used=used, bytes_limit=self._store.quota_bytes, messages_used=count, messages_limit=self._store.quota_messages)


@implementer(IMessageStore)
class MemoryStore:
    """All users' mail in memory; accounts are created on first use."""

    def __init__(self, quota_bytes: Optional[int] = None, quota_messages: Optional[int] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.quota_bytes = quota_bytes
        self.quota_messages = quota_messages
        self._clock = clock
        self._accounts: dict[str, MemoryAccount] = {}
        self._validity = itertools.count(max(1, int(clock())))

    def next_uid_validity(self) -> int:
        """A UIDVALIDITY no folder of this store has had (time based, strictly increasing)."""
        return next(self._validity)

    def now(self) -> datetime:
        return datetime.fromtimestamp(int(self._clock()), tz=timezone.utc)

    def account(self, user: str) -> MemoryAccount:
        """The account of a user, created on first use."""
        if user not in self._accounts:
            self._accounts[user] = MemoryAccount(self, user)
        return self._accounts[user]

    def open_account(self, user: str) -> "Deferred[MemoryAccount]":
        return succeed(self.account(user))

    def deliver(self, user: str, message: "bytes | MessageFile", folder: str = "INBOX") -> "Deferred[AppendResult]":
        return self.account(user).append(folder, message)

    def close(self) -> "Deferred[None]":
        """Nothing to save (the Maildir store's close() saves its indexes)."""
        return succeed(None)
