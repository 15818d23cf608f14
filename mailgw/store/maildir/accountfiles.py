"""Per-account files outside any folder: the account lock, the subscription list, durable temp-file replacement.

`mailgw-account.lock` (flock) serialises, across processes, what the account's DeferredLock
serialises inside one: first-time setup, subscription changes, `maildirsize` rewrites. Blocking:
pool thread only.
"""

from __future__ import annotations

import fcntl
import os
from typing import Callable, Optional, TypeVar

from mailgw.files import durable_replace

LOCK = "mailgw-account.lock"
SUBSCRIPTIONS = "mailgw-subscriptions"
T = TypeVar("T")


class AccountLock:
    """Exclusive flock on the account's lock file (the account directory is created if missing)."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._fd: Optional[int] = None

    def __enter__(self) -> "AccountLock":
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        self._fd = os.open(os.path.join(self._root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def with_account_lock(root: str, f: Callable[..., T], *args: object) -> T:
    """Run f(*args) holding the account's flock."""
    with AccountLock(root):
        return f(*args)


def replace_file(path: str, data: bytes, durable: bool = True) -> None:
    """Write `data` to a fresh temp file beside `path` (unique per thread and process), then rename (mailgw.files)."""
    durable_replace(path, data, sync_file=durable, sync_directory=durable)


def read_subscriptions(root: str) -> list[str]:
    try:
        with open(os.path.join(root, SUBSCRIPTIONS), encoding="utf-8") as fh:
            return sorted({line for line in fh.read().split("\n") if line})
    except FileNotFoundError:
        return []


def write_subscriptions(root: str, subs: list[str]) -> None:
    replace_file(os.path.join(root, SUBSCRIPTIONS), "".join(f"{s}\n" for s in sorted(set(subs))).encode("utf-8"))


def change_subscriptions(root: str, add: Optional[str], remove: Optional[str]) -> None:
    """Read-modify-write of the list; the caller holds the account lock (in-process and flock)."""
    subs = set(read_subscriptions(root))
    if add is not None:
        subs.add(add)
    if remove is not None:
        subs.discard(remove)
    write_subscriptions(root, sorted(subs))
