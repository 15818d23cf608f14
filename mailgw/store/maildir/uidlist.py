"""The per-folder UID list (`mailgw-uidlist`): the authority for UIDVALIDITY, UIDNEXT and uid <-> file.

Format (UTF-8 text, one record per line):

    mailgw-uidlist 1 V<uidvalidity> N<uidnext>
    <uid> <base name>
    ...

The base name is the Maildir file name without its ":2,<flags>" info, so flag renames by
any tool keep the UID. Records ascend. New records are appended and fsynced under the
folder lock (as Dovecot appends to dovecot-uidlist); removals rewrite the whole file via a
temp file, fsync and rename (then a directory fsync), so a reader sees the old or the new
list, never a mix. UIDNEXT is max(header N, last uid + 1): it never goes backwards. A torn
last line (a crash during an append that was never acknowledged) is ignored.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

from mailgw.files import durable_replace

FILE = "mailgw-uidlist"
LOCK = "mailgw-uidlist.lock"
MAGIC = "mailgw-uidlist 1"


class Corrupt(Exception):
    """The UID list exists but cannot be trusted."""


_last_validity = 0


def new_uid_validity(previous: int = 0) -> int:
    """A UIDVALIDITY above `previous` and above every one this process handed out (time based)."""
    global _last_validity
    value = max(int(time.time()), previous + 1, _last_validity + 1)
    _last_validity = value
    return value


@dataclass
class UidList:
    path: str  # the folder directory
    uid_validity: int
    uid_next: int
    by_uid: dict[int, str] = field(default_factory=dict)
    by_base: dict[str, int] = field(default_factory=dict)
    identity: tuple[int, int, int] = (0, 0, 0)  # (ino, size, mtime_ns) after our last read or write

    @property
    def file(self) -> str:
        return os.path.join(self.path, FILE)

    @classmethod
    def fresh(cls, path: str, previous_validity: int = 0) -> "UidList":
        return cls(path, new_uid_validity(previous_validity), 1)

    @classmethod
    def load(cls, path: str) -> Optional["UidList"]:
        """The list on disk; None if there is none; Corrupt if it is damaged."""
        try:
            with open(os.path.join(path, FILE), "rb") as fh:
                raw = fh.read()
                st = os.fstat(fh.fileno())
        except FileNotFoundError:
            return None
        validity, next_uid, records = parse(raw)
        ul = cls(path, validity, next_uid)
        for uid, base in records:
            ul.by_uid[uid] = base
            ul.by_base[base] = uid
        ul.uid_next = max(ul.uid_next, (max(ul.by_uid) + 1) if ul.by_uid else 1)
        ul.identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        return ul

    @classmethod
    def from_index(cls, path: str, uid_validity: int, uid_next: int, bases: dict[int, str],
                   identity: tuple[int, int, int]) -> "UidList":
        """The list as a consistent index remembers it (saves parsing a large file at open)."""
        ul = cls(path, uid_validity, uid_next, bases, {b: u for u, b in bases.items()}, identity)
        if len(ul.by_base) != len(bases):
            raise Corrupt("duplicate base names in index")
        return ul

    def stat_identity(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.file)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def changed_on_disk(self) -> bool:
        """True if another process has written the list since we last read or wrote it."""
        return self.stat_identity() != self.identity

    def assign(self, bases: list[str]) -> list[int]:
        """Give new UIDs to new base names (in order) and append them durably."""
        uids = []
        for base in bases:
            uid = self.uid_next
            self.uid_next += 1
            self.by_uid[uid] = base
            self.by_base[base] = uid
            uids.append(uid)
        if uids:
            lines = "".join(f"{u} {b}\n" for u, b in zip(uids, bases)).encode("utf-8")
            if not self._ends_cleanly():
                self.rewrite()
            else:
                fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                try:
                    os.write(fd, lines)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.identity = self.stat_identity()
        return uids

    def _ends_cleanly(self) -> bool:
        """True if the file exists and ends with a newline (else an append would glue onto a torn line)."""
        try:
            with open(self.file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return False
                fh.seek(-1, os.SEEK_END)
                return fh.read(1) == b"\n"
        except FileNotFoundError:
            return False

    def remove(self, uids: list[int]) -> None:
        """Forget UIDs (expunged messages); UIDNEXT is kept."""
        changed = False
        for uid in uids:
            base = self.by_uid.pop(uid, None)
            if base is not None:
                self.by_base.pop(base, None)
                changed = True
        if changed:
            self.rewrite()

    def rename_base(self, uid: int, base: str) -> None:
        old = self.by_uid.get(uid)
        if old is not None:
            self.by_base.pop(old, None)
        self.by_uid[uid] = base
        self.by_base[base] = uid

    def rewrite(self) -> None:
        """Replace the file atomically: temp file, fsync, rename, directory fsync."""
        body = [f"{MAGIC} V{self.uid_validity} N{self.uid_next}\n"]
        body.extend(f"{u} {self.by_uid[u]}\n" for u in sorted(self.by_uid))
        durable_replace(self.file, "".join(body).encode("utf-8"))
        self.identity = self.stat_identity()


def salvage_validity(path: str) -> int:
    """The UIDVALIDITY a damaged list still shows in its first line, or 0 (so the new one is larger)."""
    try:
        with open(os.path.join(path, FILE), "rb") as fh:
            head = fh.readline(200).decode("ascii", "replace").split(" ")
        return max((int(p[1:]) for p in head if p[:1] == "V" and p[1:].isdigit()), default=0)
    except OSError:
        return 0


def parse(raw: bytes) -> tuple[int, int, list[tuple[int, str]]]:
    """(uidvalidity, header uidnext, records) of a UID list file; raises Corrupt."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Corrupt("not UTF-8") from e
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # a torn, unacknowledged append
    else:
        lines = lines[:-1]
    if not lines:
        raise Corrupt("empty")
    head = lines[0].split(" ")
    if " ".join(head[:2]) != MAGIC or len(head) != 4 or head[2][:1] != "V" or head[3][:1] != "N":
        raise Corrupt("bad header")
    try:
        validity, next_uid = int(head[2][1:]), int(head[3][1:])
    except ValueError as e:
        raise Corrupt("bad header numbers") from e
    if validity <= 0 or next_uid <= 0:
        raise Corrupt("bad header numbers")
    records = []
    last = 0
    seen: set[str] = set()
    for line in lines[1:]:
        uid_text, sep, base = line.partition(" ")
        if not sep or not uid_text.isdigit() or not base or "/" in base:
            raise Corrupt("bad record")
        uid = int(uid_text)
        if uid <= last or base in seen:
            raise Corrupt("records not ascending or duplicated")
        last = uid
        seen.add(base)
        records.append((uid, base))
    return validity, next_uid, records


class FolderLock:
    """Exclusive flock on the folder's lock file, for the few moments a UID list is read or written."""

    def __init__(self, path: str) -> None:
        self._path = os.path.join(path, LOCK)
        self._fd: Optional[int] = None

    def __enter__(self) -> "FolderLock":
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def iter_records(ul: UidList) -> Iterator[tuple[int, str]]:
    for uid in sorted(ul.by_uid):
        yield uid, ul.by_uid[uid]
