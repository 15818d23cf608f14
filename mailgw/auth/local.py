"""LocalDirectory: the users file as an IDirectory, re-read when it changes, hashing off the reactor."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailgw.auth.base import BAD_PASSWORD, DISABLED, UNKNOWN_USER, IReasonedDirectory, Verdict, verdict_identity, resolve_login
from mailgw.auth.threads import BlockingRunner
from mailgw.auth.usersfile import LocalUser, hash_password, read_users_file, verify_hash
from mailgw.errors import ConfigError
from mailgw.interfaces import IDirectory, Identity

log = Logger()


def read_checked(path: str) -> tuple[dict[str, LocalUser], tuple[int, int, int]]:
    """The users file as start-up reads it (mode check, parse); ConfigError otherwise.

    `mailgwctl check-config` calls this same function (assemble.check), so it refuses exactly what
    the server would refuse.
    """
    try:
        return read_users_file(path)
    except OSError as e:
        raise ConfigError(f"auth.local.users_file: cannot read {path}: {e.strerror}") from None


@implementer(IDirectory, IReasonedDirectory)
class LocalDirectory:
    """Accounts from `path` (see mailgw.auth.usersfile for the format).

    The file is read at construction (ConfigError if missing, malformed, or accessible by others:
    `read_checked`), then re-checked (mtime, size, inode) at most every `recheck_interval` seconds, from
    the pool thread. A broken edit is logged and the previous contents stay in force.
    """

    def __init__(self, path: str, runner: BlockingRunner, name: str = "local",
                 recheck_interval: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.path = path
        self._runner = runner
        self._interval = recheck_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        users, self._version = read_checked(path)
        self._set(users)
        self._checked = monotonic()
        self._dummy = hash_password(os.urandom(16).hex())  # unknown users cost one real verification

    def _set(self, users: dict[str, LocalUser]) -> None:
        self._users = users
        self._by_address = {a.casefold(): u for u in users.values() for a in u.addresses}

    def _current(self) -> None:
        """Pick up edits (runs in a pool thread)."""
        now = self._monotonic()
        if now - self._checked < self._interval:
            return
        with self._lock:
            self._checked = now
            try:
                st = os.stat(self.path)
                if (st.st_mtime_ns, st.st_size, st.st_ino) == self._version:
                    return
                users, self._version = read_users_file(self.path)
            except (OSError, ConfigError) as e:
                self._runner.reactor.callFromThread(  # this runs in a pool thread
                    log.error, "users file {path} not reloaded: {error}", path=self.path, error=str(e),
                    event="auth.users_file_error")
                return
            self._set(users)
            self._runner.reactor.callFromThread(
                log.info, "users file {path} reloaded: {count} accounts", path=self.path, count=len(users),
                event="auth.users_file_reloaded")

    def _find(self, login: str) -> Optional[LocalUser]:
        self._current()
        return resolve_login(login, self._users, self._by_address)

    def _identity(self, entry: LocalUser) -> Identity:
        return Identity(entry.name, entry.addresses, self.name)

    def _check(self, login: str, password: str) -> Verdict:
        entry = self._find(login)
        if entry is None:
            verify_hash(self._dummy, password)
            return UNKNOWN_USER
        if entry.password_hash.startswith("!"):
            verify_hash(self._dummy, password)
            return DISABLED
        if not verify_hash(entry.password_hash, password):
            return BAD_PASSWORD
        return self._identity(entry)

    def check_password(self, login: str, password: str) -> "Deferred[Verdict]":
        return self._runner.run(self._check, login, password)

    def verify_password(self, login: str, password: str) -> "Deferred[Optional[Identity]]":
        return self.check_password(login, password).addCallback(verdict_identity)

    def _lookup(self, login: str) -> Optional[Identity]:
        entry = self._find(login)
        return None if entry is None else self._identity(entry)

    def lookup(self, login: str) -> "Deferred[Optional[Identity]]":
        return self._runner.run(self._lookup, login)

    def _nt_hash(self, login: str) -> Optional[tuple[Identity, bytes]]:
        entry = self._find(login)
        if entry is None or entry.nt_hash is None or entry.password_hash.startswith("!"):
            return None
        return self._identity(entry), entry.nt_hash

    def nt_hash(self, login: str) -> "Deferred[Optional[tuple[Identity, bytes]]]":
        return self._runner.run(self._nt_hash, login)

    def close(self) -> None:
        """Stop the hashing thread pool (the reactor's shutdown does it too; tests call this)."""
        self._runner.close()

    def retire(self) -> "Deferred[None]":
        """A reload replaced this directory: stop its pool without blocking the reactor (BlockingRunner.retire)."""
        return self._runner.retire()
