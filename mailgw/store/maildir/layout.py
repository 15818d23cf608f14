"""Maildir++ layout on disk: user directories, folder directories, file names, durable writes.

Everything here is blocking and runs in the store's thread pool, never on the reactor.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

from twisted.logger import Logger

from mailgw.errors import InvalidMailboxName, StorageUnavailable
from mailgw.files import fsync_directory
from mailgw.store import names

log = Logger()

SUBDIRS = ("cur", "new", "tmp")
TMP_MAX_AGE = 36 * 3600  # maildir(5): tmp/ files untouched for 36 hours are garbage
_counter = itertools.count(1)

# A file writer: create `path` exclusively, write every chunk, fsync, close. Tests inject faults here.
FileWriter = Callable[[str, Iterable[bytes]], None]


def write_file_durably(path: str, chunks: Iterable[bytes]) -> None:
    """The default FileWriter: O_EXCL create, full write, fsync (qmail-local order)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


class Measured:
    """Chunks passing through to a writer: counts the octets and keeps the head (for the header cache)."""

    def __init__(self, chunks: Iterable[bytes], head_cap: int) -> None:
        self._chunks = chunks
        self._cap = head_cap
        self.size = 0
        self.head = b""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            if len(self.head) < self._cap:
                self.head += chunk[: self._cap - len(self.head)]
            yield chunk


fsync_dir = fsync_directory  # one implementation (mailgw.files): a rename, link or unlink made durable


def storage_error(op: str, exc: OSError) -> StorageUnavailable:
    """An OSError during a write as a temporary failure (logged with errno, never the content)."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    log.error("storage_error op={op} errno={errno}", op=op, errno=code, event="store.storage_error")
    return StorageUnavailable(detail=f"{op}: {code}")


def _safe_component(value: str, what: str) -> str:
    if (not value or value in (".", "..") or value.startswith(".") or "/" in value or "\x00" in value
            or any(ord(c) < 0x20 for c in value)):
        raise InvalidMailboxName(f"Invalid {what}", detail=f"bad {what} {value!r}")
    return value


def user_root(template: str, user: str) -> str:
    """The Maildir of a user from a template with {user} and {domain}; refuses anything that escapes the base."""
    local, _, domain = user.partition("@")
    _safe_component(user, "user")
    _safe_component(local, "user")
    if domain:
        _safe_component(domain, "domain")
    path = os.path.abspath(template.format(user=user, domain=domain or ""))
    base = os.path.abspath(template.split("{", 1)[0] or ".")
    if not (path == base or path.startswith(base.rstrip(os.sep) + os.sep)):
        raise InvalidMailboxName("Invalid user", detail=f"{user!r} resolves outside {base}")
    return path


def folder_path(root: str, name: str) -> str:
    """The directory of a canonical folder name inside a user's Maildir (INBOX is the Maildir itself)."""
    if name == names.INBOX:
        return root
    path = os.path.join(root, names.to_disk(name))
    if os.path.dirname(path) != root:
        raise InvalidMailboxName(detail=f"{name!r} escapes {root}")
    return path


def is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur"))


def make_maildir(path: str, subfolder: bool) -> bool:
    """Create cur/new/tmp (and the Maildir++ `maildirfolder` marker); False if it already existed."""
    existed = is_maildir(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    for sub in SUBDIRS:
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    if subfolder:
        open(os.path.join(path, "maildirfolder"), "ab").close()
    fsync_dir(path)
    fsync_dir(os.path.dirname(path))
    return not existed


def list_folder_names(root: str) -> list[str]:
    """Canonical names of the Maildir++ folders under a user's Maildir (INBOX not included)."""
    out = []
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    for entry in entries:
        name = names.from_disk(entry)
        if name is not None and is_maildir(os.path.join(root, entry)):
            out.append(name)
    return out


def remove_tree(path: str) -> None:
    """Remove a folder directory: first renamed out of sight (atomic disappearance), then deleted."""
    parent = os.path.dirname(path)
    hidden = os.path.join(parent, f"mailgw-deleted-{time.time_ns()}-{secrets.token_hex(4)}")
    os.rename(path, hidden)
    fsync_dir(parent)
    shutil.rmtree(hidden, ignore_errors=True)


@dataclass(frozen=True)
class FileName:
    """A Maildir file name: base (stable unique part with ,S= ,W=) and info (":2,FLAGS")."""

    base: str
    letters: str  # system flag letters; "" if no info
    has_info: bool

    @classmethod
    def parse(cls, name: str) -> "FileName":
        base, sep, info = name.partition(":")
        if sep and info.startswith("2,"):
            return cls(base, info[2:], True)
        return cls(base, "", False)

    def with_letters(self, letters: str) -> str:
        return f"{self.base}:2,{letters}"

    def sizes(self) -> tuple[Optional[int], Optional[int]]:
        """(S=, W=) from the base name, when present (Dovecot and Courier write them)."""
        s = w = None
        for part in self.base.split(",")[1:]:
            key, _, value = part.partition("=")
            if value.isdigit():
                if key == "S":
                    s = int(value)
                elif key == "W":
                    w = int(value)
        return s, w


def unique_stem(hostname: str) -> str:
    """maildir(5) unique name: <sec>.M<usec>P<pid>Q<n>R<random>.<host>."""
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    host = hostname.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054") or "localhost"
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(4)}.{host}"


def unique_base(hostname: str, size: int) -> str:
    """maildir(5) name with sizes: <stem>,S=<size>,W=<size>."""
    return f"{unique_stem(hostname)},S={size},W={size}"


def place_message(path: str, chunks: Iterable[bytes], hostname: str, writer: FileWriter,
                  letters: Optional[str] = None, mtime: Optional[float] = None,
                  head_cap: int = 0) -> tuple[str, str, Measured]:
    """Durably add a message to a Maildir: tmp/ -> fsync -> link into new/ (or cur/ with flags) -> fsync dir.

    The chunks are written as they come (a spooled message is never held whole); the name's
    S=/W= sizes are known once the tmp/ file is complete. Returns (subdir, file name, the
    measured size and head). On any OSError nothing is visible in new/ or cur/ and
    StorageUnavailable is raised.
    """
    stem = unique_stem(hostname)
    tmp = os.path.join(path, "tmp", stem)
    sub = "new" if letters is None else "cur"
    measured = Measured(chunks, head_cap)
    dest = tmp
    linked = False
    try:
        writer(tmp, measured)
        base = f"{stem},S={measured.size},W={measured.size}"
        name = base if letters is None else f"{base}:2,{letters}"
        dest = os.path.join(path, sub, name)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        try:
            os.link(tmp, dest)  # link fails on a collision; rename would silently replace (T7)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
            if os.path.lexists(dest):
                raise OSError(errno.EEXIST, "maildir name collision") from e
            os.rename(tmp, dest)
        linked = True
        fsync_dir(os.path.join(path, sub))
    except OSError as e:
        # Not acknowledged, so not visible: a linked name whose directory fsync failed goes too.
        for leftover in ((dest, tmp) if linked else (tmp,)):
            try:
                os.unlink(leftover)
            except OSError:
                pass
        raise storage_error("deliver", e) from e
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    return sub, name, measured


def clean_tmp(path: str, now: Optional[float] = None) -> int:
    """Remove tmp/ files older than 36 hours; returns how many."""
    tmpdir = os.path.join(path, "tmp")
    limit = (now if now is not None else time.time()) - TMP_MAX_AGE
    removed = 0
    try:
        entries = os.listdir(tmpdir)
    except FileNotFoundError:
        return 0
    for entry in entries:
        full = os.path.join(tmpdir, entry)
        try:
            st = os.stat(full)
            if st.st_mtime < limit:
                os.unlink(full)
                removed += 1
        except OSError:
            continue
    if removed:
        log.info("removed {n} stale tmp files in {path}", n=removed, path=path, event="store.tmp_cleaned")
    return removed
