"""The per-folder index (`mailgw-index`, `mailgw-index.headers`): a rebuildable cache for fast retrieval.

`mailgw-index` (Python marshal of plain lists, written via temp file + rename) holds, per uid:
sub-directory, file name, RFC822 size in CRLF octets, internal date, and where the raw header
block sits in `mailgw-index.headers` (an append-only file of header blocks up to a cap). It
also records the mtimes of new/ and cur/ at the last scan, so an unchanged folder opens
without listing or stat-ing any message file, and the \\Recent floor. Losing or damaging
either file only costs a rescan; UIDs live in the UID list, not here.
"""

from __future__ import annotations

import marshal
import os
import tempfile
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

INDEX = "mailgw-index"
HEADERS = "mailgw-index.headers"
_MAGIC = "mailgw-index"
_VERSION = 2


class Rec(NamedTuple):
    sub: str  # "new" | "cur"
    name: str  # file name inside sub
    size: int  # RFC822.SIZE: CRLF octets
    mtime: int  # internal date, seconds since the epoch (the file's mtime)
    hoff: int  # offset of the header block in the header cache, -1 if not cached
    hlen: int
    lf: bool  # the file has bare LF line ends and is served converted to CRLF


@dataclass
class IndexState:
    uid_validity: int
    recent_floor: int
    dirs: dict[str, int] = field(default_factory=lambda: {"new": 0, "cur": 0})  # mtime_ns at last scan
    recs: dict[int, Rec] = field(default_factory=dict)
    headers_len: int = 0  # bytes of the header cache the records may point into
    # The UID list as it was when this index was saved: if the file still has this identity
    # (inode, size, mtime_ns) and held exactly these uids, it need not be parsed at all.
    uidlist_identity: tuple[int, int, int] = (0, 0, 0)
    uid_next: int = 0
    uidlist_count: int = -1


def load(path: str) -> Optional[IndexState]:
    """The saved index, or None if missing or damaged in any way."""
    try:
        with open(os.path.join(path, INDEX), "rb") as fh:
            data = marshal.load(fh)
        magic, version, validity, floor, dirs, hlen, ul_info, cols = data
        if magic != _MAGIC or version != _VERSION:
            return None
        ident, uid_next, ul_count = tuple(int(x) for x in ul_info[:3]), int(ul_info[3]), int(ul_info[4])
        uids, subs, fnames, sizes, mtimes, hoffs, hlens, lfs = cols
        recs = {
            u: Rec("new" if s == "n" else "cur", n, z, m, o, ln, bool(f))
            for u, s, n, z, m, o, ln, f in zip(uids, subs, fnames, sizes, mtimes, hoffs, hlens, lfs)
        }
        if len(recs) != len(uids):
            return None
        try:
            if os.path.getsize(os.path.join(path, HEADERS)) < hlen:
                recs = {u: r._replace(hoff=-1, hlen=0) for u, r in recs.items()}
                hlen = 0
        except FileNotFoundError:
            recs = {u: r._replace(hoff=-1, hlen=0) for u, r in recs.items()}
            hlen = 0
        return IndexState(int(validity), int(floor), {"new": int(dirs[0]), "cur": int(dirs[1])}, recs, int(hlen),
                          ident, uid_next, ul_count)  # type: ignore[arg-type]
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
        return None


def save(path: str, state: IndexState) -> None:
    """Write the index via a temp file and rename (no fsync: it is a cache)."""
    uids = sorted(state.recs)
    recs = [state.recs[u] for u in uids]
    cols = (
        uids,
        "".join("n" if r.sub == "new" else "c" for r in recs),
        [r.name for r in recs],
        [r.size for r in recs],
        [r.mtime for r in recs],
        [r.hoff for r in recs],
        [r.hlen for r in recs],
        bytes(1 if r.lf else 0 for r in recs),
    )
    data = (_MAGIC, _VERSION, state.uid_validity, state.recent_floor,
            (state.dirs["new"], state.dirs["cur"]), state.headers_len,
            (*state.uidlist_identity, state.uid_next, state.uidlist_count), cols)
    fd, tmp = tempfile.mkstemp(prefix=INDEX + ".", suffix=".tmp", dir=path)
    with os.fdopen(fd, "wb") as fh:
        marshal.dump(data, fh)
    os.rename(tmp, os.path.join(path, INDEX))


class HeaderCache:
    """Append-only store of header blocks, read with pread.

    Offsets in the records and the open descriptor change together in compact(), so every read
    and the compaction run in jobs holding the folder's lock (never on the reactor): a reader can
    never pair a new offset with the old file (issue 13, defect 1).
    """

    def __init__(self, path: str, valid_len: int) -> None:
        self._file = os.path.join(path, HEADERS)
        self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self._fd).st_size > valid_len:
            os.ftruncate(self._fd, valid_len)
        self.length = valid_len

    def add(self, block: bytes) -> tuple[int, int]:
        # The file's real end, not our count: blocks are immutable once written, whoever wrote them.
        offset = max(self.length, os.fstat(self._fd).st_size)
        os.pwrite(self._fd, block, offset)
        self.length = offset + len(block)
        return offset, len(block)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def needs_compact(self, state: IndexState) -> bool:
        """True when more than half of a cache over 1 MiB is garbage (expunged messages)."""
        if self.length < 1 << 20:
            return False
        return sum(r.hlen for r in state.recs.values() if r.hoff >= 0) * 2 < self.length

    def compact(self, path: str, state: IndexState) -> None:
        """Rewrite the cache with only live blocks. A crash at any point leaves a consistent pair:
        the saved index stops pointing into the cache before the cache is replaced."""
        save(path, IndexState(state.uid_validity, state.recent_floor, dict(state.dirs),
                              {u: r._replace(hoff=-1, hlen=0) for u, r in state.recs.items()}, 0))
        fd, tmp = tempfile.mkstemp(prefix=HEADERS + ".", suffix=".tmp", dir=path)
        offset = 0
        for uid, r in sorted(state.recs.items()):
            if r.hoff >= 0:
                os.pwrite(fd, self.read(r.hoff, r.hlen), offset)
                state.recs[uid] = r._replace(hoff=offset)
                offset += r.hlen
        os.rename(tmp, self._file)
        os.close(self._fd)
        self._fd = fd
        self.length = state.headers_len = offset

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
