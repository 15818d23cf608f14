"""The local users file: format, permission check, password hashing (argon2id, bcrypt), atomic rewrite.

One account per line, colon-separated (neither argon2 nor bcrypt hashes contain a colon):

    # name : password hash : addresses (comma-separated) : NT hash (32 hex, optional)
    alice:$argon2id$v=19$m=65536,t=3,p=4$...:alice@example.test,a.liddell@example.test:10B2F1961375B20126508C2267862BF0
    bob:$2b$12$...:bob@example.test:

The file holds password equivalents (NT hashes), so it is refused when others (not owner, not
group) may access it; 0640 with the service's group is how a root-owned file is shared with it.
Pure functions with blocking I/O: callers on the reactor run them in a thread pool.
"""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import argon2
import bcrypt

from mailgw import files
from mailgw.errors import ConfigError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-+]{0,63}")
_ADDRESS_RE = re.compile(r"[^\s@:,]{1,64}@[A-Za-z0-9.\-]{1,253}")
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")

_argon2 = argon2.PasswordHasher()  # argon2id, RFC 9106 second recommendation (t=3, m=64 MiB, p=4)


@dataclass(frozen=True)
class LocalUser:
    """One line of the users file."""

    name: str
    password_hash: str
    addresses: tuple[str, ...] = ()
    nt_hash: Optional[bytes] = None

    def line(self) -> str:
        nt = self.nt_hash.hex().upper() if self.nt_hash else ""
        return f"{self.name}:{self.password_hash}:{','.join(self.addresses)}:{nt}"


def valid_name(name: str) -> bool:
    """Account names: a letter or digit, then letters, digits, '.', '_', '-', '+' (64 at most)."""
    return bool(_NAME_RE.fullmatch(name))


def valid_address(address: str) -> bool:
    """A plausible mail address (no spaces, colons or commas: they are the file's separators)."""
    return bool(_ADDRESS_RE.fullmatch(address))


def hash_password(password: str, scheme: str = "argon2id") -> str:
    """Hash a password for the file (slow by design: call it off the reactor)."""
    if scheme == "argon2id":
        return _argon2.hash(password)
    if scheme == "bcrypt":
        raw = password.encode("utf-8")
        if len(raw) > 72:
            raise ValueError("bcrypt passwords are limited to 72 bytes; use argon2id")
        return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=12)).decode("ascii")
    raise ValueError(f"unknown password scheme {scheme!r} (argon2id or bcrypt)")


def verify_hash(stored: str, password: str) -> bool:
    """True if `password` matches the stored argon2 or bcrypt hash; False for any malformed hash."""
    try:
        if stored.startswith("$argon2"):
            return bool(_argon2.verify(stored, password))
        if stored.startswith(("$2a$", "$2b$", "$2y$")):
            return bool(bcrypt.checkpw(password.encode("utf-8"), stored.encode("ascii")))
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
        return False
    return False


def parse_users(text: str, source: str = "users file") -> dict[str, LocalUser]:
    """Parse the file's text; ConfigError names every bad line. Keys are casefolded names."""
    users: dict[str, LocalUser] = {}
    owners: dict[str, str] = {}  # address -> user: an address names one account (send-as, delivery)
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) not in (2, 3, 4):
            problems.append(f"{source}:{number}: expected name:hash:addresses:nt_hash")
            continue
        name, password_hash, addresses, nt = (parts + ["", ""])[:4]
        if not valid_name(name):
            problems.append(f"{source}:{number}: invalid user name")
            continue
        if not password_hash.startswith(("$argon2id$", "$argon2i$", "$2a$", "$2b$", "$2y$", "!")):
            problems.append(f"{source}:{number}: password hash is not argon2 or bcrypt ('!' = disabled)")
            continue
        addrs = tuple(a.strip().lower() for a in addresses.split(",") if a.strip())
        if not all(valid_address(a) for a in addrs):
            problems.append(f"{source}:{number}: invalid address")
            continue
        if nt and not _HEX32.fullmatch(nt):
            problems.append(f"{source}:{number}: NT hash must be 32 hex digits")
            continue
        if name.casefold() in users:
            problems.append(f"{source}:{number}: duplicate user {name}")
            continue
        taken = [a for a in addrs if a in owners]
        if taken:
            problems.append(f"{source}:{number}: address {taken[0]} already belongs to {owners[taken[0]]}")
            continue
        owners.update((a, name) for a in addrs)
        users[name.casefold()] = LocalUser(name, password_hash, addrs, bytes.fromhex(nt) if nt else None)
    if problems:
        raise ConfigError(problems)
    return users


def format_users(users: "dict[str, LocalUser] | list[LocalUser]") -> str:
    """The file text for these accounts, sorted by name, with a header comment."""
    entries = sorted(users.values() if isinstance(users, dict) else users, key=lambda u: u.name.casefold())
    header = "# mailgw users: name:password hash:addresses:NT hash -- edit with `mailgwctl user`\n"
    return header + "".join(u.line() + "\n" for u in entries)


def check_mode(path: str, st: Optional[os.stat_result] = None) -> None:
    """Refuse a users file others can access (it holds password equivalents); the service's group may read it."""
    files.check_secret(path, "auth.local.users_file", st)


def read_users_file(path: str) -> tuple[dict[str, LocalUser], tuple[int, int, int]]:
    """Read and parse the file after checking its mode; returns (users, (mtime_ns, size, inode))."""
    with open(path, "r", encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        check_mode(path, st)
        text = f.read()
    return parse_users(text, path), (st.st_mtime_ns, st.st_size, st.st_ino)


def write_users_file(path: str, users: "dict[str, LocalUser]") -> None:
    """Atomically replace (or create) the file, keeping its owner, group and mode (see mailgw.files)."""
    files.replace(path, format_users(users).encode("utf-8"), secret=True)


@contextmanager
def locked(path: str) -> Iterator[None]:
    """Serialise edits by several `mailgwctl user` runs (flock on a sidecar `.lock` file)."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
