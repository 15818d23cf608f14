"""Scanning a Maildir folder's new/ and cur/ against its index, and reading message files.

Mixed into FolderDisk: blocking, pool thread only, inside the folder's serialised jobs (docs/store.md).
"""

from __future__ import annotations

import errno
import io
import os
import time
from typing import IO, Optional

from twisted.logger import Logger

from mailgw.store.flags import header_block, to_crlf
from mailgw.store.maildir import index as idx
from mailgw.store.maildir.keywords import Keywords
from mailgw.store.maildir.layout import FileName
from mailgw.store.maildir.uidlist import UidList

log = Logger()

SUBS = ("new", "cur")  # new/ first: a new -> cur rename during the scan is then seen, not lost
# A directory modified within this much of a scan is scanned again: a change in the same
# timestamp tick as the scan would not move its mtime. One second where the file system keeps
# whole seconds (Dovecot's rule); on nanosecond file systems the tick is a jiffy (<= 10 ms).
_RACY_NS = 1_000_000_000
_RACY_FINE_NS = 50_000_000
_YOUNG_NS = 10_000_000_000  # an unfinished-looking file younger than this is not indexed yet


class ScanMixin:
    path: str
    header_cap: int
    ul: Optional[UidList]
    state: Optional[idx.IndexState]
    headers: Optional[idx.HeaderCache]
    keywords: Keywords
    names: dict[str, dict[str, int]]
    dirty: set[str]
    unsaved: int
    deferred: set[str]  # sub-directories holding files left for a later scan
    fine_mtimes = False  # seen a sub-second directory mtime: the file system keeps them

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
            if st.st_mtime_ns % 1_000_000_000:
                self.fine_mtimes = True
            if time.time_ns() - st.st_mtime_ns < (_RACY_FINE_NS if self.fine_mtimes else _RACY_NS):
                self.dirty.add(sub)
            else:
                self.dirty.discard(sub)
            self.unsaved += 1
        expunged = self._settle_missing(missing, changed)
        changed |= self._index_new(fresh)
        self.dirty |= self.deferred
        self.deferred = set()
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
        """Index one message file: CRLF size, internal date (mtime), cached header block.

        A file that looks unfinished (its ,S= disagrees with its size, or it is empty) and was
        modified in the last few seconds is left for a later scan: a plain `cp` into new/
        must not give a UID to half a message. Older ones are indexed as they are.
        """
        try:
            with open(os.path.join(self.path, sub, name), "rb") as fh:
                st = os.fstat(fh.fileno())
                s, w = FileName.parse(name).sizes()
                if ((s is not None and s != st.st_size) or st.st_size == 0) and \
                        time.time_ns() - st.st_mtime_ns < _YOUNG_NS:
                    self.deferred.add(sub)
                    return None
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

    # -- reading (pool thread, inside a job holding the folder's lock: the records and the header
    # cache read here are rewritten by other jobs of the same folder, e.g. a compaction)

    def _file(self, uid: int) -> str:
        assert self.state is not None
        r = self.state.recs[uid]
        return os.path.join(self.path, r.sub, r.name)

    def open_file(self, uid: int) -> tuple[IO[bytes], bool]:
        """The message file opened unbuffered, and whether it has bare LFs (served converted to CRLF)."""
        assert self.state is not None
        for _ in range(3):  # another program may be renaming it right now
            r = self.state.recs[uid]
            try:
                return open(os.path.join(self.path, r.sub, r.name), "rb", buffering=0), r.lf
            except FileNotFoundError:
                continue
        raise FileNotFoundError(errno.ENOENT, "message file vanished", self._file(uid))

    def open_message(self, uid: int) -> IO[bytes]:
        """A readable file of the message as served (CRLF)."""
        fh, lf = self.open_file(uid)
        if not lf:
            return fh
        with fh:
            return io.BytesIO(to_crlf(fh.read()))

    def open_many(self, uids: list[int], preload: int) -> dict[int, "bytes | tuple[IO[bytes], int]"]:
        """Open messages: those up to `preload` octets (and LF-converted ones) read whole, others left open with their size.

        Messages that are gone (expunged meanwhile, here or by another program) are left out.
        """
        out: dict[int, "bytes | tuple[IO[bytes], int]"] = {}
        for uid in uids:
            try:
                fh, lf = self.open_file(uid)
            except (KeyError, FileNotFoundError):
                continue
            size = os.fstat(fh.fileno()).st_size
            if lf or size <= preload:
                with fh:
                    data = fh.read()
                out[uid] = to_crlf(data) if lf else data
            else:
                out[uid] = (fh, size)
        return out

    def read_headers(self, uids: list[int]) -> dict[int, bytes]:
        """Header blocks of messages that still exist."""
        out = {}
        for uid in uids:
            try:
                out[uid] = self.header_bytes(uid)
            except (KeyError, FileNotFoundError):
                continue
        return out

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
