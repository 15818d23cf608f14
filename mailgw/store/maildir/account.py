"""One user's Maildir++ (IAccount): folders, subscriptions, APPEND, quota, and the store (IMessageStore).

Account-wide files (first-time setup, subscriptions, maildirsize) are changed only by pool jobs
run through the account's DeferredLock, each holding the account's flock against other
processes (accountfiles.py). The usage counts in memory belong to the reactor thread.
"""

from __future__ import annotations

import os
import shutil
import socket
from datetime import datetime
from typing import Any, Callable, Optional, TypeVar

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, fail, gatherResults, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailgw.errors import InvalidMailboxName, MailboxExists, NoSuchMailbox, QuotaExceeded, StoreError
from mailgw.interfaces import AppendResult, FolderInfo, FolderStatus, IAccount, IMessageStore, MessageFile, QuotaUsage
from mailgw.store import names
from mailgw.store.body import source_size
from mailgw.store.flags import SEEN, keyword_part, normalize_flags, to_letters
from mailgw.store.maildir import layout
from mailgw.store.maildir.accountfiles import change_subscriptions, read_subscriptions, with_account_lock, write_subscriptions
from mailgw.store.maildir.folder import MaildirFolder
from mailgw.store.maildir.quota import Usage, folder_usage
from mailgw.store.view import FolderView, uids_from

log = Logger()
T = TypeVar("T")


@implementer(IAccount)
class MaildirAccount:
    def __init__(self, store: "MaildirStore", user: str, root: str) -> None:
        self.store = store
        self.user = user
        self.root = root
        self.usage = Usage(root, store.quota_bytes, store.quota_messages)
        self._folders: dict[str, MaildirFolder] = {}
        self.lock = DeferredLock()  # account-wide jobs, in order: setup, subscriptions, maildirsize
        self.ready = False  # set up (reactor thread)

    def locked(self, f: Callable[..., T], *args: Any) -> "Deferred[T]":
        """Run a blocking account job in the pool after every earlier one, holding the account's flock."""
        return self.lock.run(self.store.run, self._flocked(f), *args)

    def _flocked(self, f: Callable[..., T]) -> Callable[..., T]:
        def job(*args: Any) -> T:
            return with_account_lock(self.root, f, *args)

        job.__name__ = getattr(f, "__name__", "account")  # names the operation in storage_error logs
        return job

    # -- setup

    def setup(self) -> "Deferred[None]":
        """First use in this process: create the Maildir if new, load usage. Concurrent callers share one job."""
        return ensureDeferred(self._set_up())

    async def _set_up(self) -> None:
        if self.ready:
            return
        await self.lock.acquire()
        try:
            if not self.ready:  # an earlier caller's job may have finished while this one waited
                usage = await self.store.run(self._flocked(self._setup))
                self.usage.bytes, self.usage.messages = usage
                self.ready = True
        finally:
            self.lock.release()

    def _setup(self) -> tuple[int, int]:
        """Create the Maildir (and SPECIAL-USE folders, subscribed) for a new user; return usage. Account lock held."""
        if layout.make_maildir(self.root, subfolder=False):
            for name in names.SPECIAL_USE:
                layout.make_maildir(layout.folder_path(self.root, name), subfolder=True)
            write_subscriptions(self.root, [names.INBOX, *names.SPECIAL_USE])
            log.info("created mailbox for {user}", user=self.user, event="store.account_created")
        for entry in os.listdir(self.root):
            if entry.startswith("mailgw-deleted-"):  # a folder deletion interrupted by a crash
                shutil.rmtree(os.path.join(self.root, entry), ignore_errors=True)
        return self.usage.load()

    # -- helpers

    def folder(self, name: str) -> MaildirFolder:
        """The (cached) backend of a folder name; existence is checked by its disk jobs."""
        canonical = names.normalize(name)
        f = self._folders.get(canonical)
        if f is None:
            f = self._folders[canonical] = MaildirFolder(self, canonical, layout.folder_path(self.root, canonical))
        return f

    def _forget(self, name: str) -> None:
        for n in [n for n in self._folders if n == name or names.is_inferior(n, name)]:
            del self._folders[n]

    def count(self, nbytes: int, nmessages: int) -> None:
        """Count a change now (reactor); write it to maildirsize in the pool, in order, after earlier ones."""
        if nbytes or nmessages:
            self.usage.add(nbytes, nmessages)
            if self.usage.tracked:
                total = (self.usage.bytes, self.usage.messages)  # the pool job gets values, never the live counts
                job = self.locked(self.usage.record, nbytes, nmessages, total)
                job.addErrback(lambda f: log.failure("maildirsize not updated", f, event="store.quota_write_failed"))

    def recorded(self) -> "Deferred[None]":
        """Fires once every account job queued so far (every counted change is in maildirsize)."""
        return self.lock.run(lambda: None)

    async def check_quota(self, nbytes: int, nmessages: int) -> None:
        u = self.usage
        if u.bytes_limit is not None and u.bytes + nbytes > u.bytes_limit:
            raise QuotaExceeded(detail=f"{self.user}: bytes")
        if u.messages_limit is not None and u.messages + nmessages > u.messages_limit:
            raise QuotaExceeded(detail=f"{self.user}: messages")

    def _exists(self, name: str) -> bool:
        return name == names.INBOX or layout.is_maildir(layout.folder_path(self.root, name))

    # -- IAccount

    def list_folders(self) -> "Deferred[list[FolderInfo]]":
        return self.store.run(self._list)

    def _list(self) -> list[FolderInfo]:
        existing = set(layout.list_folder_names(self.root)) | {names.INBOX}
        everything = set(existing)
        for n in existing:
            everything.update(names.parent_names(n))
        parents = {p for n in everything for p in names.parent_names(n)}
        ordered = [names.INBOX] + sorted(everything - {names.INBOX})
        return [FolderInfo(name=n, special_use=names.special_use(n),
                           has_children=n in parents,
                           selectable=n in existing) for n in ordered]

    def create_folder(self, name: str) -> "Deferred[None]":
        return self.store.run(self._create, name)

    def _create(self, name: str) -> None:
        # RFC 3501 §6.3.3: a trailing separator only declares the name a parent.
        canonical = names.normalize(name[:-1] if name.endswith(names.SEPARATOR) and len(name) > 1 else name)
        if self._exists(canonical):
            raise MailboxExists(detail=canonical)
        for n in [*names.parent_names(canonical), canonical]:
            if not self._exists(n):
                layout.make_maildir(layout.folder_path(self.root, n), subfolder=True)

    def delete_folder(self, name: str) -> "Deferred[None]":
        return ensureDeferred(self._delete(name))

    async def _delete(self, name: str) -> None:
        canonical = names.normalize(name)
        if canonical == names.INBOX:
            raise NoSuchMailbox("Cannot delete INBOX", detail="INBOX")
        f = self.folder(canonical)

        def job() -> tuple[int, int]:
            if not self._exists(canonical):
                raise NoSuchMailbox(detail=canonical)
            used = folder_usage(f.path)
            layout.remove_tree(f.path)
            return used

        nbytes, nmsgs = await f.lock.run(self.store.run, job)
        self._folders.pop(canonical, None)
        self.count(-nbytes, -nmsgs)
        for view in list(f.views):
            view.notify()

    def rename_folder(self, old: str, new: str) -> "Deferred[None]":
        return ensureDeferred(self._rename(old, new))

    async def _rename(self, old: str, new: str) -> None:
        src, dst = names.normalize(old), names.normalize(new)
        if names.is_inferior(dst, src):
            raise InvalidMailboxName("Invalid mailbox name: Cannot rename below itself", detail=dst)
        if src == names.INBOX:
            # RFC 3501 §6.3.5: INBOX's messages move to the new folder; INBOX stays, empty.
            await self.create_folder(dst)
            inbox = self.folder(names.INBOX)
            await inbox.sync()
            await inbox.move(sorted(inbox.current()), dst, None)
            return
        await self.store.run(self._rename_dirs, src, dst)
        self._forget(src)

    def _rename_dirs(self, src: str, dst: str) -> None:
        if not self._exists(src):
            raise NoSuchMailbox(detail=src)
        if self._exists(dst) or dst == names.INBOX:
            raise MailboxExists(detail=dst)
        moving = [n for n in layout.list_folder_names(self.root) if n == src or names.is_inferior(n, src)]
        targets = {n: dst + n[len(src):] for n in moving}
        for target in targets.values():
            names.normalize(target)  # a child may become too deep or too long
            if self._exists(target):
                raise MailboxExists(detail=target)
        for parent in names.parent_names(dst):
            if not self._exists(parent):
                layout.make_maildir(layout.folder_path(self.root, parent), subfolder=True)
        for n in sorted(moving):  # Maildir++ children are siblings on disk: one rename each
            os.rename(layout.folder_path(self.root, n), layout.folder_path(self.root, targets[n]))
        layout.fsync_dir(self.root)

    def subscriptions(self) -> "Deferred[list[str]]":
        return self.store.run(read_subscriptions, self.root)  # replaced by rename: always a whole list

    def subscribe(self, name: str) -> "Deferred[None]":
        return maybeDeferred(names.normalize, name).addCallback(
            lambda canonical: self.locked(change_subscriptions, self.root, canonical, None))

    def unsubscribe(self, name: str) -> "Deferred[None]":
        return maybeDeferred(names.normalize, name).addCallback(
            lambda canonical: self.locked(change_subscriptions, self.root, None, canonical))

    def status(self, name: str) -> "Deferred[FolderStatus]":
        return ensureDeferred(self._status(name))

    async def _status(self, name: str) -> FolderStatus:
        f = self.folder(name)
        await f.sync()
        current = f.current()
        return FolderStatus(messages=len(current), recent=len(uids_from(current, f.recent_floor)),
                            uid_next=f.uid_next, uid_validity=f.uid_validity,
                            unseen=sum(1 for i in current.values() if SEEN not in i.flags),
                            size=sum(i.size for i in current.values()))

    def open_folder(self, name: str, readonly: bool = False) -> "Deferred[FolderView]":
        try:
            f = self.folder(name)
        except Exception as e:
            return fail(e)
        return FolderView(f, readonly).start()

    def append(self, name: str, message: "bytes | MessageFile", flags: frozenset[str] = frozenset(),
               internal_date: Optional[datetime] = None) -> "Deferred[AppendResult]":
        return ensureDeferred(self._append(name, message, flags, internal_date))

    async def _append(self, name: str, message: "bytes | MessageFile", flags: frozenset[str],
                      internal_date: Optional[datetime], to_new: bool = False) -> AppendResult:
        f = self.folder(name)
        data = message  # copied (and LF -> CRLF converted) in chunks by the pool job
        await self.check_quota(source_size(message), 1)
        clean = normalize_flags(flags)
        mtime = internal_date.timestamp() if internal_date is not None else None
        letters = None if to_new and not clean else to_letters(clean)
        delta = await f.deliver(data, letters, mtime, keyword_part(clean))
        await self.recorded()
        info = delta.put[-1]
        return AppendResult(uid_validity=delta.uid_validity, uid=info.uid)

    def deliver(self, message: "bytes | MessageFile", folder: str) -> "Deferred[AppendResult]":
        """Local delivery (SMTP): into new/, like an LDA."""
        return ensureDeferred(self._append(folder, message, frozenset(), None, to_new=True))

    def quota(self) -> QuotaUsage:
        u = self.usage
        return QuotaUsage(bytes_used=u.bytes, bytes_limit=u.bytes_limit,
                          messages_used=u.messages, messages_limit=u.messages_limit)

    def loaded_folders(self) -> list[MaildirFolder]:
        return [f for f in self._folders.values() if f.loaded]

    async def evict_idle(self, older_than: float) -> int:
        """Unload folders no session holds and nothing used since `older_than`; returns how many."""
        evicted = 0
        for name, f in list(self._folders.items()):
            if f.views or f.last_used > older_than:
                continue
            await f.lock.acquire()  # let queued jobs (e.g. the index flush after a close) finish
            try:
                if f.views or self._folders.get(name) is not f:
                    continue
                del self._folders[name]
                if f.loaded:
                    await self.store.run(f.disk.close)
                evicted += 1
            finally:
                f.lock.release()
        return evicted


@implementer(IMessageStore)
class MaildirStore:
    """All users' Maildirs under a root template such as "/var/lib/mailgw/mail/{domain}/{user}".

    The caller creates (and starts and stops) the bounded thread pool that all blocking disk
    work runs in; the reactor thread never fsyncs or scans a directory.
    """

    def __init__(self, root_template: str, reactor: Any, threadpool: Any,
                 quota_bytes: Optional[int] = None, quota_messages: Optional[int] = None,
                 hostname: Optional[str] = None, writer: Optional[layout.FileWriter] = None,
                 header_cap: int = 16384, poll_interval: float = 2.0, idle_unload: float = 600.0) -> None:
        self.root_template = root_template
        self.reactor = reactor
        self.threadpool = threadpool
        self.quota_bytes = quota_bytes
        self.quota_messages = quota_messages
        self.hostname = hostname or socket.gethostname()
        self.writer: layout.FileWriter = writer or layout.write_file_durably
        self.header_cap = header_cap
        self.poll_interval = poll_interval
        self.idle_unload = idle_unload
        self._accounts: dict[str, MaildirAccount] = {}
        self._sweep: Any = None

    def run(self, f: Callable[..., T], *args: Any) -> "Deferred[T]":
        """Run blocking work in the store's thread pool; an OSError becomes StorageUnavailable (temporary)."""
        def guarded() -> T:
            try:
                return f(*args)
            except StoreError:
                raise
            except OSError as e:
                raise layout.storage_error(getattr(f, "__name__", "store"), e) from e

        return deferToThreadPool(self.reactor, self.threadpool, guarded)

    def open_account(self, user: str) -> "Deferred[MaildirAccount]":
        return ensureDeferred(self._open(user))

    async def _open(self, user: str) -> MaildirAccount:
        acct = self._accounts.get(user)
        if acct is None:
            # One account object per user from the first call on: a first login racing the
            # first delivery share it, and its lock runs the setup once.
            acct = self._accounts[user] = MaildirAccount(self, user, layout.user_root(self.root_template, user))
        if not acct.ready:
            try:
                await acct.setup()
            except BaseException:
                if self._accounts.get(user) is acct and not acct.ready:
                    del self._accounts[user]  # the next attempt starts afresh
                raise
        if self._sweep is None and self.idle_unload > 0:
            self._sweep = self.reactor.callLater(self.idle_unload / 2, self._swept)
        return acct

    def _swept(self) -> None:
        self._sweep = None
        d = self.evict_idle(self.idle_unload)
        d.addErrback(lambda f: log.failure("unloading idle folders failed", f, event="store.evict_failed"))
        if self._accounts:
            self._sweep = self.reactor.callLater(self.idle_unload / 2, self._swept)

    def evict_idle(self, max_idle: float) -> "Deferred[int]":
        """Save and unload folders unused for `max_idle` seconds and not open in any session (bounds memory)."""
        return ensureDeferred(self._evict(max_idle))

    async def _evict(self, max_idle: float) -> int:
        cutoff = self.reactor.seconds() - max_idle
        evicted = 0
        # Accounts stay (small, and sessions hold them); only folder indexes are unloaded.
        for acct in list(self._accounts.values()):
            evicted += await acct.evict_idle(cutoff)
        return evicted

    def deliver(self, user: str, message: "bytes | MessageFile", folder: str = "INBOX") -> "Deferred[AppendResult]":
        return ensureDeferred(self._deliver(user, message, folder))

    async def _deliver(self, user: str, message: "bytes | MessageFile", folder: str) -> AppendResult:
        acct = await self._open(user)
        return await acct.deliver(message, folder)

    def close(self) -> "Deferred[None]":
        """Save every loaded folder's index (call from stopService, before stopping the pool)."""
        return ensureDeferred(self._close())

    async def _close(self) -> None:
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        folders = [f for acct in self._accounts.values() for f in acct.loaded_folders()]
        for f in folders:
            f.stop_polling()
        # Each folder's lock, so the save never runs beside another job of that folder. Free locks
        # are taken at once, so the job is usually queued in this very turn (see below).
        await gatherResults([f.lock.acquire() for f in folders])

        def save_all() -> None:
            # One job, queued at once: it runs even if the pool is told to stop right after
            # (MultiService does not wait for this service before stopping the pool's).
            for f in folders:
                try:
                    f.disk.close()  # each save holds the folder's flock
                except OSError as e:
                    log.warn("index of {folder} not saved at shutdown: {why}", folder=f.path,
                             why=os.strerror(e.errno or 0), event="store.index_save_failed")

        try:
            await self.run(save_all)
        finally:
            for f in folders:
                f.lock.release()
