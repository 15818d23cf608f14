"""The blocking model of one Maildir folder: UID list + index + keywords, kept in step with the files.

Every public method runs in the store's thread pool, serialised per folder by the caller and
across processes by the folder's flock. Results go back to the reactor as a Delta of
MessageInfo values; nothing here touches the reactor.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from twisted.logger import Logger

from mailgw.interfaces import MessageFile, MessageInfo
from mailgw.store.body import message_chunks
from mailgw.store.flags import apply_mode, from_letters, header_block, keyword_part, to_letters
from mailgw.store.maildir import index as idx
from mailgw.store.maildir.keywords import Keywords
from mailgw.store.maildir.layout import FileName, FileWriter, clean_tmp, fsync_dir, place_message, storage_error
from mailgw.store.maildir.scan import SUBS, ScanMixin
from mailgw.store.maildir.uidlist import Corrupt, FolderLock, UidList, salvage_validity

log = Logger()



@dataclass
class Delta:
    """What a disk operation changed, for the reactor-side state."""

    put: list[MessageInfo] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    reset: bool = False  # put holds the whole folder
    uid_validity: int = 0
    uid_next: int = 0
    recent_floor: int = 0


def merge(first: Delta, then: Delta) -> Delta:
    """One delta for two consecutive ones (the second's counters win)."""
    if not first.reset:
        return Delta(first.put + then.put, first.drop + then.drop, False,
                     then.uid_validity, then.uid_next, then.recent_floor)
    infos = {i.uid: i for i in first.put}
    infos.update((i.uid, i) for i in then.put)
    for uid in then.drop:
        infos.pop(uid, None)
    return Delta(list(infos.values()), [], True, then.uid_validity, then.uid_next, then.recent_floor)


class FolderDisk(ScanMixin):
    def __init__(self, path: str, name: str, hostname: str, writer: FileWriter, header_cap: int) -> None:
        self.path = path
        self.name = name
        self.hostname = hostname
        self.writer = writer
        self.header_cap = header_cap
        self.ul: Optional[UidList] = None
        self.state: Optional[idx.IndexState] = None
        self.headers: Optional[idx.HeaderCache] = None
        self.keywords = Keywords(path)
        self.names: dict[str, dict[str, int]] = {"new": {}, "cur": {}}
        self.dirty: set[str] = set()
        self.deferred: set[str] = set()
        self.unsaved = 0
        self.last_save = time.monotonic()
        self._flag_sets: dict[tuple[str, Optional[frozenset[str]]], frozenset[str]] = {}

    @property
    def loaded(self) -> bool:
        return self.ul is not None

    # -- values

    def info(self, uid: int) -> MessageInfo:
        assert self.state is not None
        r = self.state.recs[uid]
        _, sep, letters = r.name.rpartition(":2,")
        key = (letters if sep else "", self.keywords.by_uid.get(uid))
        flags = self._flag_sets.get(key)
        if flags is None:  # few distinct flag sets exist: share one frozenset per combination
            flags = self._flag_sets[key] = from_letters(key[0]) | (key[1] or frozenset())
        return MessageInfo(uid=uid, flags=flags, size=r.size,
                           internal_date=datetime.fromtimestamp(r.mtime, tz=timezone.utc))

    def _delta(self, put: list[int], drop: list[int], reset: bool = False) -> Delta:
        assert self.ul is not None and self.state is not None
        return Delta([self.info(u) for u in put], drop, reset, self.ul.uid_validity, self.ul.uid_next,
                     self.state.recent_floor)

    # -- loading and scanning

    def load(self) -> Delta:
        """Read UID list, index and keywords; rebuild what is missing; scan what changed."""
        with FolderLock(self.path):
            return self._load()

    def _load(self) -> Delta:
        clean_tmp(self.path)
        state = idx.load(self.path)
        ul = self._uidlist_from_index(state)
        corrupt = False
        if ul is None:
            try:
                ul = UidList.load(self.path)
            except Corrupt as e:
                ul, corrupt = None, True
                log.warn("uid list of {folder} corrupt ({why})", folder=self.path, why=str(e),
                         event="store.uidlist_corrupt")
        if ul is None:
            previous = max(state.uid_validity if state is not None else 0, salvage_validity(self.path))
            ul = UidList.fresh(self.path, previous)
            if corrupt or any(self._listdir(sub) for sub in SUBS):
                log.warn("rebuilt uid list of {folder}: new UIDVALIDITY {v}", folder=self.path, v=ul.uid_validity,
                         event="store.uidlist_rebuilt")
            ul.rewrite()
            state = None
        rebuilt = state is None or state.uid_validity != ul.uid_validity
        if rebuilt:
            if ul.by_uid:
                log.info("rebuilding index of {folder}", folder=self.path, event="store.index_rebuilt")
            state = idx.IndexState(ul.uid_validity, recent_floor=ul.uid_next)
        assert state is not None
        if self.headers is not None:
            self.headers.close()
        self.headers = idx.HeaderCache(self.path, state.headers_len)
        self.ul, self.state = ul, state
        for uid in [u for u in state.recs if u not in ul.by_uid]:
            del state.recs[uid]
        if len(state.recs) != len(ul.by_uid):
            state.dirs = {"new": 0, "cur": 0}  # some listed uids are not indexed: find their files
        self.names = {"new": {}, "cur": {}}
        for uid, r in state.recs.items():
            self.names[r.sub][r.name] = uid
        self._scan()
        if rebuilt:
            in_new = [u for u, r in state.recs.items() if r.sub == "new"]
            state.recent_floor = min(in_new + [ul.uid_next])
            self._save()
        return self._delta(list(state.recs), [], reset=True)

    def _uidlist_from_index(self, state: Optional[idx.IndexState]) -> Optional[UidList]:
        if state is None or state.uidlist_count != len(state.recs) or state.uidlist_identity == (0, 0, 0):
            return None
        probe = UidList(self.path, state.uid_validity, state.uid_next)
        if probe.stat_identity() != state.uidlist_identity:
            return None
        try:
            return UidList.from_index(self.path, state.uid_validity, state.uid_next,
                                      {u: r.name.partition(":")[0] for u, r in state.recs.items()},
                                      state.uidlist_identity)
        except Corrupt:
            return None

    def sync(self) -> Delta:
        """Pick up changes made by other programs (cheap when nothing changed: a few stats)."""
        with FolderLock(self.path):
            return self._sync_locked()

    def _catch_up(self) -> Delta:
        """Before writing the UID list (lock held): take in what another process wrote to it first."""
        if self.ul is None or self.ul.changed_on_disk():
            return self._sync_locked()
        return self._delta([], [])

    def _sync_locked(self) -> Delta:
        if not self.loaded:
            return self._load()
        assert self.ul is not None and self.state is not None
        if self.ul.changed_on_disk():
            try:
                fresh = UidList.load(self.path)
            except Corrupt:
                fresh = None
            if fresh is None or fresh.uid_validity != self.ul.uid_validity:
                self.ul = None
                return self._load()
            gone = [u for u in self.state.recs if u not in fresh.by_uid]
            self.ul = fresh
            for uid in gone:
                self._forget(uid)
            self.state.dirs = {"new": 0, "cur": 0}
            put, drop = self._scan()
            return self._delta(put, drop + gone)
        put, drop = self._scan()
        return self._delta(put, drop)

    # -- changing (pool thread, folder lock held by the caller's serialisation)

    def deliver(self, source: "bytes | MessageFile", letters: Optional[str], mtime: Optional[float],
                keywords: frozenset[str] = frozenset()) -> Delta:
        """Durable delivery: tmp, fsync, link, dir fsync, UID appended and fsynced; then acknowledged.

        The source is copied in chunks (bare LF becomes CRLF on the way), never held whole.
        """
        with FolderLock(self.path):
            pre = self._catch_up()
            assert self.ul is not None and self.state is not None
            sub, name, measured = place_message(self.path, message_chunks(source), self.hostname, self.writer,
                                                letters, mtime, self.header_cap + 4)
            try:
                [uid] = self.ul.assign([FileName.parse(name).base])
            except OSError as e:
                try:
                    os.unlink(os.path.join(self.path, sub, name))
                    fsync_dir(os.path.join(self.path, sub))
                except OSError:
                    pass
                self.ul = None  # reload: the in-memory list may be ahead of the file
                raise storage_error("uidlist", e) from e
            when = int(mtime) if mtime is not None else int(time.time())
            head = measured.head
            block = header_block(head)
            complete = len(block) < len(head) or measured.size == len(head)
            self.state.recs[uid] = self._rec(sub, name, measured.size, when, block if complete else None, False)
            self.names[sub][name] = uid
            self.unsaved += 1
            if keywords:
                self.keywords.update({uid: keywords})
            return merge(pre, self._delta([uid], []))

    def store(self, uids: list[int], flags: frozenset[str], mode: str) -> tuple[Delta, dict[int, frozenset[str]]]:
        """STORE: rename files for system flags (into cur/), append keyword changes."""
        with FolderLock(self.path):
            pre = self._catch_up()
            assert self.ul is not None and self.state is not None
            result: dict[int, frozenset[str]] = {}
            changed, kw_changes = [], {}
            for uid in uids:
                if uid not in self.state.recs:
                    continue
                old = self.info(uid).flags
                new = apply_mode(old, flags, mode)
                result[uid] = new
                if new == old:
                    continue
                changed.append(uid)
                kw_changes[uid] = keyword_part(new)
                self._rename_for(uid, to_letters(new))
            self.keywords.update(kw_changes)
            return merge(pre, self._delta(changed, [])), result

    def _rename_for(self, uid: int, letters: str) -> None:
        assert self.state is not None
        r = self.state.recs[uid]
        fn = FileName.parse(r.name)
        if r.sub == "cur" and fn.has_info and fn.letters == letters:
            return
        new_name = fn.with_letters(letters)
        try:
            os.rename(os.path.join(self.path, r.sub, r.name), os.path.join(self.path, "cur", new_name))
        except FileNotFoundError:
            return  # renamed or deleted by another program: the next scan tells
        self.names[r.sub].pop(r.name, None)
        self.state.recs[uid] = r._replace(sub="cur", name=new_name)
        self.names["cur"][new_name] = uid
        self.unsaved += 1

    def claim_recent(self) -> tuple[Delta, frozenset[int]]:
        """A read-write session claims \\Recent: floor moves to UIDNEXT, new/ files move to cur/."""
        with FolderLock(self.path):
            pre = self._catch_up()
            assert self.ul is not None and self.state is not None
            floor = self.state.recent_floor
            claimed = [u for u in range(floor, self.ul.uid_next) if u in self.state.recs]  # O(new uids)
            for uid in claimed:
                if self.state.recs[uid].sub == "new":
                    self._rename_for(uid, to_letters(self.info(uid).flags))
            if self.state.recent_floor != self.ul.uid_next:
                self.state.recent_floor = self.ul.uid_next
                self.unsaved += 1
            return merge(pre, self._delta([], [])), frozenset(claimed)

    def expunge(self, uids: list[int]) -> Delta:
        with FolderLock(self.path):
            pre = self._catch_up()
            assert self.ul is not None and self.state is not None
            gone = []
            for uid in uids:
                if uid not in self.state.recs:
                    continue
                try:
                    os.unlink(self._file(uid))
                except FileNotFoundError:
                    pass
                self._forget(uid)
                gone.append(uid)
            if gone:
                for sub in SUBS:
                    fsync_dir(os.path.join(self.path, sub))
                self.ul.remove(gone)
                self.keywords.forget(gone)
            return merge(pre, self._delta([], gone))

    # -- index persistence

    def flush(self, force: bool = False) -> None:
        """Save the index if it changed (always when forced, else at most every 10 s or 1000 changes)."""
        if self.state is None or self.headers is None or not self.unsaved:
            return
        if not force and self.unsaved < 1000 and time.monotonic() - self.last_save < 10:
            return
        with FolderLock(self.path):
            self._save()

    def _save(self) -> None:
        assert self.state is not None and self.headers is not None
        try:
            if self.headers.needs_compact(self.state):
                self.headers.compact(self.path, self.state)
            # A directory scanned within the racy window is saved as unscanned: rescanned after a restart.
            assert self.ul is not None
            self.state.uidlist_identity = self.ul.identity
            self.state.uid_next = self.ul.uid_next
            self.state.uidlist_count = len(self.ul.by_uid)
            saved_dirs = dict(self.state.dirs)
            self.state.dirs = {s: (0 if s in self.dirty else m) for s, m in saved_dirs.items()}
            try:
                idx.save(self.path, self.state)
            finally:
                self.state.dirs = saved_dirs
        except OSError as e:
            log.warn("index of {folder} not saved: {why}", folder=self.path, why=os.strerror(e.errno or 0),
                     event="store.index_save_failed")
            return
        self.unsaved = 0
        self.last_save = time.monotonic()

    def close(self) -> None:
        self.flush(force=True)
        if self.headers is not None:
            self.headers.close()
