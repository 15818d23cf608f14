"""In-memory IDirectory: users with a password, optional NT hash and addresses (tests, labs)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Optional

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mailgw.auth.base import BAD_PASSWORD, DISABLED, UNKNOWN_USER, IReasonedDirectory, Verdict, resolve_login, verdict_identity
from mailgw.interfaces import IDirectory, Identity


@dataclass
class MemoryUser:
    """One account: canonical id, password (plain text: this is a fake), addresses, NT hash."""

    user: str
    password: str
    addresses: tuple[str, ...] = ()
    nt_hash: Optional[bytes] = None  # 16 bytes; see mailgw.auth.md4.nt_hash
    disabled: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@implementer(IDirectory, IReasonedDirectory)
class MemoryDirectory:
    """Answers from a dict, synchronously (the Deferreds have already fired).

    Logins resolve case-insensitively by uid, by any address, and as `DOMAIN\\uid` or `uid@domain`
    when `uid@domain` is not itself an address of someone else.
    """

    def __init__(self, users: "list[MemoryUser] | None" = None, name: str = "memory") -> None:
        self.name = name
        self._users: dict[str, MemoryUser] = {}
        for user in users or ():
            self.add(user)

    def add(self, user: MemoryUser) -> None:
        """Add or replace an account."""
        self._users[user.user.casefold()] = user

    def add_user(self, user: str, password: str, addresses: "tuple[str, ...] | list[str]" = (),
                 nt_hash: Optional[bytes] = None) -> MemoryUser:
        """Convenience: add an account and return it."""
        entry = MemoryUser(user, password, tuple(a.lower() for a in addresses), nt_hash)
        self.add(entry)
        return entry

    def remove(self, user: str) -> None:
        """Forget an account (no error if unknown)."""
        self._users.pop(user.casefold(), None)

    def find(self, login: str) -> Optional[MemoryUser]:
        """The account a login name or address names, or None."""
        by_address = {a.casefold(): u for u in self._users.values() for a in u.addresses}
        return resolve_login(login, self._users, by_address)

    def _identity(self, entry: MemoryUser) -> Identity:
        return Identity(entry.user, tuple(entry.addresses), self.name)

    def check_password(self, login: str, password: str) -> "Deferred[Verdict]":
        entry = self.find(login)
        if entry is None:
            hmac.compare_digest(password.encode(), b"\0" * 16)  # same work as a real comparison
            return succeed(UNKNOWN_USER)
        if not hmac.compare_digest(password.encode(), entry.password.encode()):
            return succeed(BAD_PASSWORD)
        if entry.disabled:
            return succeed(DISABLED)
        return succeed(self._identity(entry))

    def verify_password(self, login: str, password: str) -> "Deferred[Optional[Identity]]":
        return self.check_password(login, password).addCallback(verdict_identity)

    def lookup(self, login: str) -> "Deferred[Optional[Identity]]":
        entry = self.find(login)
        return succeed(None if entry is None else self._identity(entry))

    def nt_hash(self, login: str) -> "Deferred[Optional[tuple[Identity, bytes]]]":
        entry = self.find(login)
        if entry is None or entry.nt_hash is None or entry.disabled:
            return succeed(None)
        return succeed((self._identity(entry), entry.nt_hash))
