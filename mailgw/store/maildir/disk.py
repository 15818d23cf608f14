"""The blocking model of one Maildir folder: UID list + index + keywords, kept in step with the files.

Every public method runs in the store's thread pool, serialised per folder by the caller and
across processes by the folder's flock. Results go back to the reactor as a Delta of
MessageInfo values; nothing here touches the reactor.
"""

from __future__ import annotations

import errno
import io
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Optional

from twisted.logger import Logger

from mailgw.interfaces import MessageInfo
from mailgw.store.flags import apply_mode, from_letters, header_block, keyword_part, to_crlf, to_letters
from mailgw.store.maildir import index as idx
from mailgw.store.maildir.keywords import Keywords
from mailgw.store.maildir.layout import FileName, FileWriter, clean_tmp, fsync_dir, place_message, storage_error
from mailgw.store.maildir.uidlist import Corrupt, FolderLock, UidList

log = Logger()

SUBS = ("new", "cur")  # new/ first: a new -> cur rename during the scan is then seen, not lost
_RACY_NS = 1_000_000_000  # a directory modified within this much of a scan is scanned again


@dataclass
class Delta:
    """What a disk operation changed, for the reactor-side state."""

    put: list[MessageInfo] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    reset: bool = False  # put holds the whole folder
    uid_validity: int = 0
    uid_next: int = 0
    recent_floor: int = 0


class FolderDisk:
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
        try:
            ul = UidList.load(self.path)
            corrupt = False
        except Corrupt as e:
            ul, corrupt = None, True
            log.warn("uid list of {folder} corrupt ({why})", folder=self.path, why=str(e), event="store.uidlist_corrupt")
        state = idx.load(self.path)
        if ul is None:
            previous = state.uid_validity if state is not None else 0
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

    def sync(self) -> Delta:
        """Pick up changes made by other programs (cheap when nothing changed: a few stats)."""
        with FolderLock(self.path):
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

    def _listdir(self, sub: str) -> list[str]:
        try:
            entries = os.listdir(os.path.join(self.path, sub))
        except FileNotFoundError:
            return []
        return [e for e in entries if not e.startswith(".") and "\n" not in e]

    def _scan(self) -> tuple[list[int], list[int]]:
        """Rescan new/ and cur/ if their mtimes moved; returns (changed or new uids, expunged uids)."""
        assert self.ul is not None and self.state is not None
        changed: set[int] = set()
        fresh: list[tuple[str, str]] = []
        missing: list[tuple[str, str, int]] = []
        for sub in SUBS:
            st = os.stat(os.path.join(self.path, sub))
            if st.st_mtime_ns == self.state.dirs[sub] and sub not in self.dirty:
                continue
            listing = set(self._listdir(sub))
            known = self.names[sub]
            for name in listing.difference(known):
                uid = self.ul.by_base.get(FileName.parse(name).base)
                if uid is None:
                    fresh.append((sub, name))
                elif self._relocate(uid, sub, name):
                    changed.add(uid)
            missing.extend((sub, n, u) for n, u in known.items() if n not in listing)
            self.state.dirs[sub] = st.st_mtime_ns
            if time.time_ns() - st.st_mtime_ns < _RACY_NS:
                self.dirty.add(sub)
            else:
                self.dirty.discard(sub)
            self.unsaved += 1
        expunged = self._settle_missing(missing, changed)
        changed |= self._index_new(fresh)
        return sorted(changed), expunged

    def _relocate(self, uid: int, sub: str, name: str) -> bool:
        """A known message under a new name (flag rename, new -> cur); indexes it if it was never indexed."""
        assert self.state is not None
        old = self.state.recs.get(uid)
        if old is None:
            rec = self._read_file(sub, name)
            if rec is None:
                return False
            self.state.recs[uid] = rec
        else:
            if self.names[old.sub].get(old.name) == uid and os.path.lexists(os.path.join(self.path, old.sub, old.name)):
                log.warn("duplicate maildir base {name} ignored", name=name, event="store.duplicate_file")
                return False
            self.names[old.sub].pop(old.name, None)
            self.state.recs[uid] = old._replace(sub=sub, name=name)
        self.names[sub][name] = uid
        return True

    def _settle_missing(self, missing: list[tuple[str, str, int]], changed: set[int]) -> list[int]:
        """Names that vanished: found again under another name, or gone (expunged by another program)."""
        assert self.ul is not None and self.state is not None
        pending = [(s, n, u) for s, n, u in missing if self.names[s].get(n) == u]
        if not pending:
            return []
        by_base: dict[str, tuple[str, str]] = {}
        for sub in SUBS:  # a second look, in case a rename raced the first listing
            for name in self._listdir(sub):
                by_base[FileName.parse(name).base] = (sub, name)
        gone = []
        for sub, name, uid in pending:
            found = by_base.get(FileName.parse(name).base)
            if found is not None:
                self.names[sub].pop(name, None)
                self.state.recs[uid] = self.state.recs[uid]._replace(sub=found[0], name=found[1])
                self.names[found[0]][found[1]] = uid
                changed.add(uid)
            else:
                self._forget(uid)
                gone.append(uid)
        if gone:
            self.ul.remove(gone)
            self.keywords.forget(gone)
        return gone

    def _forget(self, uid: int) -> None:
        assert self.state is not None
        r = self.state.recs.pop(uid, None)
        if r is not None and self.names[r.sub].get(r.name) == uid:
            del self.names[r.sub][r.name]
        self.unsaved += 1

    def _index_new(self, fresh: list[tuple[str, str]]) -> set[int]:
        """Files no UID list knows (delivered by other programs): next UIDs, in file-name (time) order."""
        assert self.ul is not None and self.state is not None
        recs = []
        for sub, name in sorted(fresh, key=lambda sn: sn[1]):
            rec = self._read_file(sub, name)
            if rec is not None:
                recs.append(rec)
        uids = self.ul.assign([FileName.parse(r.name).base for r in recs])
        for uid, rec in zip(uids, recs):
            self.state.recs[uid] = rec
            self.names[rec.sub][rec.name] = uid
        self.unsaved += len(uids)
        return set(uids)

    def _read_file(self, sub: str, name: str) -> Optional[idx.Rec]:
        """Index one message file: CRLF size, internal date (mtime), cached header block."""
        try:
            with open(os.path.join(self.path, sub, name), "rb") as fh:
                st = os.fstat(fh.fileno())
                s, w = FileName.parse(name).sizes()
                if w is not None and s == st.st_size == w:
                    head = fh.read(self.header_cap + 4)
                    block = header_block(head)
                    complete = len(block) < len(head) or len(head) < self.header_cap + 4
                    size, lf = w, False
                else:
                    data = fh.read()
                    crlf = to_crlf(data)
                    block, complete = header_block(crlf), True
                    size, lf = len(crlf), crlf != data
        except FileNotFoundError:
            return None
        return self._rec(sub, name, size, int(st.st_mtime), block if complete else None, lf)

    def _rec(self, sub: str, name: str, size: int, mtime: int, block: Optional[bytes], lf: bool) -> idx.Rec:
        assert self.headers is not None and self.state is not None
        hoff, hlen = -1, 0
        if block is not None and len(block) <= self.header_cap:
            try:
                hoff, hlen = self.headers.add(block)
                self.state.headers_len = self.headers.length
            except OSError:
                hoff, hlen = -1, 0  # a cache: a full disk only costs a file read later
        return idx.Rec(sub, name, size, mtime, hoff, hlen, lf)

    # -- reading (any thread)

    def _file(self, uid: int) -> str:
        assert self.state is not None
        r = self.state.recs[uid]
        return os.path.join(self.path, r.sub, r.name)

    def open_message(self, uid: int) -> IO[bytes]:
        assert self.state is not None
        for _ in range(3):  # another thread or program may be renaming it right now
            r = self.state.recs[uid]
            try:
                fh = open(os.path.join(self.path, r.sub, r.name), "rb")
            except FileNotFoundError:
                continue
            if not r.lf:
                return fh
            with fh:
                return io.BytesIO(to_crlf(fh.read()))
        raise FileNotFoundError(errno.ENOENT, "message file vanished", self._file(uid))

    def header_bytes(self, uid: int) -> bytes:
        assert self.state is not None and self.headers is not None
        r = self.state.recs[uid]
        if r.hoff >= 0:
            try:
                block = self.headers.read(r.hoff, r.hlen)
            except OSError:
                block = b""
            # Trust a cached block only if it looks like one (the cache is never fsynced).
            if len(block) == r.hlen and block[:1] not in (b"", b"\x00") and (
                    block.endswith(b"\r\n\r\n") or block == b"\r\n" or r.hlen == r.size):
                return block
        with self.open_message(uid) as fh:
            data = fh.read(self.header_cap + 4)
            while b"\r\n\r\n" not in data:
                more = fh.read(1 << 16)
                if not more:
                    break
                data += more
        return header_block(data)

    # -- changing (pool thread, folder lock held by the caller's serialisation)

    def deliver(self, data: bytes, letters: Optional[str], mtime: Optional[float],
                keywords: frozenset[str] = frozenset()) -> Delta:
        """Durable delivery: tmp, fsync, link, dir fsync, UID appended and fsynced; then acknowledged."""
        with FolderLock(self.path):
            if not self.loaded:
                self._load()
            assert self.ul is not None and self.state is not None
            sub, name = place_message(self.path, data, self.hostname, self.writer, letters, mtime)
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
            self.state.recs[uid] = self._rec(sub, name, len(data), when, header_block(data), False)
            self.names[sub][name] = uid
            self.unsaved += 1
            if keywords:
                self.keywords.update({uid: keywords})
            return self._delta([uid], [])

    def store(self, uids: list[int], flags: frozenset[str], mode: str) -> tuple[Delta, dict[int, frozenset[str]]]:
        """STORE: rename files for system flags (into cur/), append keyword changes."""
        with FolderLock(self.path):
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
            return self._delta(changed, []), result

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
            assert self.ul is not None and self.state is not None
            floor = self.state.recent_floor
            claimed = [u for u in self.state.recs if u >= floor]
            for uid in claimed:
                if self.state.recs[uid].sub == "new":
                    self._rename_for(uid, to_letters(self.info(uid).flags))
            self.state.recent_floor = self.ul.uid_next
            self.unsaved += 1
            return self._delta([], []), frozenset(claimed)

    def expunge(self, uids: list[int]) -> Delta:
        with FolderLock(self.path):
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
            return self._delta([], gone)

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
