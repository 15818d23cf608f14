"""Durable file writes (tmp, fsync, rename, directory fsync), and the owner and mode of the files mailgwctl writes.

Low level (imports only mailgw.errors), so the users file (auth), keys and certificates (net), the
relay queue's envelopes (smtp) and the manhole host key (admin) share one implementation of the
crash-safe write: a reader (or the process after a crash) sees the old content or the new, never
a mix, and a rename is durable only once its directory is fsynced (POSIX leaves that to the caller).

Ownership (docs/operations.md, "Installing as a service"): mailgwctl usually runs as root while the
service runs as `mailgw`, reading `/etc/mailgw` (`root:mailgw 0750`). So

- a file that is rewritten keeps its owner, group and mode (a secret never keeps bits for others);
- a new file takes the owner and group of its directory; a new secret is 0600, or 0640 when the
  directory's group is not its owner's own group (`root:mailgw`: the service's group may read it);
- a secret file (users file, private key) is refused at start-up and by check-config alike when
  others (not owner, not group) have any access: `check_secret`.
"""

from __future__ import annotations

import os
import tempfile
import pwd
import stat
from dataclasses import dataclass
from typing import Optional

from mailgw.errors import ConfigError


@dataclass(frozen=True)
class Ownership:
    uid: int
    gid: int
    mode: int


def ownership(path: str, secret: bool, new_mode: int = 0o644) -> Ownership:
    """Owner, group and mode `path` gets when mailgwctl (re)writes it (see the module docstring)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        directory = os.stat(os.path.dirname(os.path.abspath(path)))
        mode = new_mode
        if secret:
            mode = 0o640 if _shared_with_group(directory) else 0o600
        return Ownership(directory.st_uid, directory.st_gid, mode)
    mode = stat.S_IMODE(st.st_mode)
    return Ownership(st.st_uid, st.st_gid, mode & ~0o007 if secret else mode)


def _shared_with_group(directory: os.stat_result) -> bool:
    """A directory whose group is not its owner's primary group, and which that group may enter (root:mailgw 0750)."""
    try:
        own_group = pwd.getpwuid(directory.st_uid).pw_gid
    except KeyError:
        return False
    return directory.st_gid != own_group and bool(directory.st_mode & stat.S_IXGRP)


def _apply(fd: int, path: str, wanted: Ownership) -> None:
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (wanted.uid, wanted.gid):
        try:
            os.fchown(fd, wanted.uid, wanted.gid)
        except PermissionError:
            # Only root may give a file away; a non-root mailgwctl writes the files of a service
            # running as itself, so its own ownership is right (the group too, if it is a member).
            # Rewriting someone else's file is not.
            try:
                os.fchown(fd, -1, wanted.gid)
            except PermissionError:
                pass
            if os.path.exists(path) and os.stat(path).st_uid != os.geteuid():
                raise PermissionError(1, f"cannot keep the owner ({wanted.uid}:{wanted.gid}) of the file it replaces "
                                         "(run mailgwctl as root or as the file's owner)", path) from None
    os.fchmod(fd, wanted.mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_all_synced(fd: int, data: bytes) -> None:
    _write_all(fd, data)
    os.fsync(fd)


def fsync_directory(path: str) -> None:
    """fsync a directory, so a rename, link or unlink in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: str, data: bytes, mode: int = 0o600) -> None:
    """Create `path` (a leftover of a crashed write is replaced), write all of `data`, fsync; removed on failure."""
    try:
        os.unlink(path)  # O_CREAT keeps the mode of a leftover file: start from nothing
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _write_all_synced(fd, data)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def durable_replace(path: str, data: bytes, tmp: Optional[str] = None, mode: int = 0o600,
                    sync_directory: bool = True, sync_file: bool = True) -> None:
    """Replace (or create) `path` with `data`: write and fsync a temporary file, rename it over `path`, fsync the directory.

    The temporary file is `tmp` if given (same filesystem), else a `tempfile.mkstemp` name beside
    `path`: unique per thread and process, so concurrent writers never share one (issue 13).
    `sync_directory=False` for a caller that fsyncs the directory itself once for several files
    (the relay queue's commit) or whose file is a cache; `sync_file=False` as well for a cache
    that may be lost (the store's quota totals).
    """
    if tmp is not None:
        write_synced(tmp, data, mode)
    else:
        directory, name = os.path.split(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=name + ".", suffix=".tmp", dir=directory)
        try:
            if mode != 0o600:
                os.fchmod(fd, mode)
            (_write_all_synced if sync_file else _write_all)(fd, data)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_directory:
        fsync_directory(os.path.dirname(os.path.abspath(path)))


def create_durably(path: str, data: bytes, mode: int = 0o600) -> None:
    """Create `path` holding `data` whole or not at all; FileExistsError if it exists (as O_EXCL).

    Written and fsynced under a temporary name, then linked into place (link, not rename: it
    never replaces a file another process created meanwhile), so a crash leaves no half file.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    write_synced(tmp, data, mode)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def ensure_directory(path: str) -> None:
    """Create `path` and missing parents, each with the owner, group and mode of the directory above it.

    So `/etc/mailgw/tls` made by a root mailgwctl is `root:mailgw 0750` like `/etc/mailgw`.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    ensure_directory(parent)
    st = os.stat(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    try:
        os.chown(path, st.st_uid, st.st_gid)
    except PermissionError:
        pass  # not root: the directory is ours, as the files in it will be
    os.chmod(path, stat.S_IMODE(st.st_mode) & 0o2777)


def stage(path: str, data: bytes, secret: bool, new_mode: int = 0o644) -> str:
    """Write `data` to a fresh temporary file beside `path` with its final owner and mode, fsynced; its name."""
    wanted = ownership(path, secret, new_mode)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.unlink(tmp)  # O_CREAT keeps the mode of a leftover file: start from nothing
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never briefly readable by anyone else
    try:
        _apply(fd, path, wanted)
        _write_all_synced(fd, data)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def commit(tmp: str, path: str) -> None:
    """Rename a staged file into place (atomic on one filesystem) and fsync the directory."""
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def replace(path: str, data: bytes, secret: bool, new_mode: int = 0o644) -> None:
    """Durably replace (or create) `path` with `data`, owner and mode as the module docstring says."""
    commit(stage(path, data, secret, new_mode), path)


def secret_problem(path: str, st: Optional[os.stat_result] = None) -> Optional[str]:
    """Why a secret file (password equivalents, a private key) must not be used, or None."""
    st = st if st is not None else os.stat(path)
    if st.st_mode & stat.S_IRWXO:
        return (f"{path} is accessible by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"chmod o-rwx it (0640 with the service's group, or 0600)")
    return None


def check_secret(path: str, key: str, st: Optional[os.stat_result] = None) -> None:
    """ConfigError naming `key` when others may access `path`: the one check start-up and check-config share."""
    problem = secret_problem(path, st)
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")
