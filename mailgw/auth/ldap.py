"""LDAPDirectory: search-then-bind against LDAP with ldap3, in a bounded thread pool (shared notes ldap.md).

Service bind; search for exactly one entry with `user_filter` (the login escaped with ldap3's
filter escaping); simple bind as that DN. Only result 49 is a wrong password: a server that is
down, a timeout, an untrusted certificate or two matching entries is AuthUnavailable.
Connections are kept per pool thread (one service, one bind-check) and re-established after
failures, trying the URLs in order.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
from typing import Any, Callable, Optional, Sequence

from ldap3 import BASE, NONE, SAFE_SYNC, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailgw.auth.base import BAD_PASSWORD, UNKNOWN_USER, IReasonedDirectory, Verdict, verdict_identity
from mailgw.auth.names import MAX_LOGIN_LENGTH, split_login
from mailgw.auth.threads import BlockingRunner
from mailgw.errors import AuthUnavailable, ConfigError
from mailgw.interfaces import IDirectory, Identity

log = Logger()

DEFAULT_FILTER = "(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))"
INVALID_CREDENTIALS = 49
_ANSWERS = (0, 4, 32)  # success, sizeLimitExceeded (ambiguous), noSuchObject: answers, not outages
_HOLD_DOWN = 10.0  # seconds a failed URL is tried last


class _Outage(Exception):
    """An LDAP answer that means "the directory cannot answer now" (retried once, then AuthUnavailable)."""


class _Local(threading.local):
    service: Optional[Connection] = None
    binder: Optional[Connection] = None


@implementer(IDirectory, IReasonedDirectory)
class LDAPDirectory:
    """One `[auth.ldap.NAME]` directory. All values, no config objects; `bind_password` already read.

    `user_filter` may use `{login}` (the login without any `DOMAIN\\` prefix) and `{user}` (its
    local part, before any `@`). `require_group` is a group DN whose `member`/`uniqueMember`/
    `memberUid` must name the user. `ldap://` URLs need `starttls=True` unless `allow_plaintext`.
    """

    def __init__(self, name: str, urls: Sequence[str], bind_dn: str, bind_password: str, user_base: str,
                 reactor: Any, *, user_filter: str = DEFAULT_FILTER, ca_file: Optional[str] = None,
                 starttls: bool = False, timeout: float = 5.0, nt_hash_attribute: Optional[str] = None,
                 require_group: Optional[str] = None, uid_attribute: str = "uid",
                 address_attributes: Sequence[str] = ("mail",), allow_plaintext: bool = False,
                 runner: Optional[BlockingRunner] = None, pool_size: int = 4,
                 on_error: Optional[Callable[[str, str], None]] = None) -> None:
        self.name = name
        key = f"auth.{name}"
        if not urls:
            raise ConfigError(f"{key}.urls: at least one URL is required")
        for url in urls:
            scheme = url.split("://", 1)[0].lower()
            if scheme not in ("ldap", "ldaps"):
                raise ConfigError(f"{key}.urls: {url!r} is not ldap:// or ldaps://")
            if scheme == "ldap" and not starttls and not allow_plaintext:
                raise ConfigError(f"{key}.starttls: {url} would send passwords in clear; use ldaps:// or starttls")
        if "{login}" not in user_filter and "{user}" not in user_filter:
            raise ConfigError(f"{key}.user_filter: must contain {{login}} or {{user}}")
        self.urls = tuple(urls)
        self.bind_dn = bind_dn
        self._bind_password = bind_password
        self.user_base = user_base
        self.user_filter = user_filter
        self.starttls = starttls
        self.timeout = float(timeout)
        self.nt_hash_attribute = nt_hash_attribute
        self.require_group = require_group
        self.uid_attribute = uid_attribute
        self.address_attributes = tuple(address_attributes)
        self._tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file, version=ssl.PROTOCOL_TLS_CLIENT)
        self._runner = runner or BlockingRunner(reactor, f"ldap-{name}", maxthreads=pool_size)
        self._local = _Local()
        self._reactor = reactor
        self._on_error = on_error  # (server, kind: connect|timeout|bind|search) -> mailgw_ldap_errors_total
        self._down_until: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<LDAPDirectory {self.name} {','.join(self.urls)}>"  # never the password

    # ------------------------------------------------------------------ connections (pool threads)

    def _ordered_urls(self) -> list[str]:
        now = time.monotonic()
        return sorted(self.urls, key=lambda u: self._down_until.get(u, 0.0) > now)  # stable: config order

    def _open(self, user: Optional[str], password: Optional[str]) -> Connection:
        last: Exception | str = "no URL"
        for url in self._ordered_urls():
            try:
                server = Server(url, get_info=NONE, connect_timeout=self.timeout, tls=self._tls)
                conn = Connection(server, user=user, password=password, client_strategy=SAFE_SYNC,
                                  receive_timeout=max(1, math.ceil(self.timeout)),  # ldap3 needs an int
                                  read_only=True, raise_exceptions=False)
                conn.open()
                if self.starttls and not server.ssl:
                    conn.start_tls()
                    if not conn.tls_started:
                        raise _Outage("StartTLS refused")
                if user is not None:
                    status, result, _, _ = conn.bind()
                    if not status:
                        conn.unbind()
                        raise _Outage(f"service bind failed: {result.get('result')} {result.get('description')}")
                self._down_until.pop(url, None)
                return conn
            except (LDAPException, _Outage, OSError, ssl.SSLError) as e:
                self._down_until[url] = time.monotonic() + _HOLD_DOWN
                self._report(url, _kind(e, "bind" if "bind failed" in str(e) else "connect"), e)
                last = e
        raise _Outage(str(last))

    def _report(self, server: str, kind: str, error: Exception) -> None:
        """Log (and count) a directory error from a pool thread, on the reactor thread."""
        self._reactor.callFromThread(log.warn, "ldap {directory} {server} {kind} error: {error}",
                                     directory=self.name, server=server, kind=kind, error=str(error)[:300],
                                     event="auth.ldap_error")
        if self._on_error is not None:
            self._reactor.callFromThread(self._on_error, server, kind)

    def _drop(self, attr: str) -> None:
        conn = getattr(self._local, attr)
        setattr(self._local, attr, None)
        if conn is not None:
            try:
                conn.unbind()
            except Exception:
                pass

    def _with(self, attr: str, op: Any) -> Any:
        """Run op(conn) on this thread's connection; reconnect and retry once; then AuthUnavailable."""
        error: Exception | None = None
        for _ in range(2):
            conn = getattr(self._local, attr)
            try:
                if conn is None:
                    conn = self._open(self.bind_dn, self._bind_password) if attr == "service" else self._open(None, None)
                    setattr(self._local, attr, conn)
                return op(conn)
            except (LDAPException, _Outage, OSError, ssl.SSLError) as e:
                error = e
                if conn is not None:  # _open reports its own failures
                    self._report(conn.server.host, _kind(e, "search" if isinstance(e, _Outage) else "connect"), e)
                self._drop(attr)
        raise AuthUnavailable(detail=f"ldap {self.name}: {error}")

    # ------------------------------------------------------------------ operations (pool threads)

    def _filter(self, login: str) -> Optional[str]:
        _, local, domain = split_login(login.strip())
        full = f"{local}@{domain}" if domain else local
        if not local or len(full) > MAX_LOGIN_LENGTH or "\0" in full:
            return None
        # RFC 4515 §3 escaping (maddy GHSA-5835-4gvc-32pc): '*' -> \2a, '(' -> \28, ...
        return self.user_filter.replace("{login}", escape_filter_chars(full)).replace(
            "{user}", escape_filter_chars(local))

    def _find(self, login: str, extra: Sequence[str] = ()) -> Optional[dict[str, Any]]:
        flt = self._filter(login)
        if flt is None:
            return None
        attributes = [self.uid_attribute, *self.address_attributes, *extra]

        def search(conn: Connection) -> list[dict[str, Any]]:
            _, result, response, _ = conn.search(self.user_base, flt, SUBTREE, attributes=attributes,
                                                 size_limit=2, time_limit=max(1, math.ceil(self.timeout)))
            if result["result"] not in _ANSWERS:
                raise _Outage(f"search: {result['result']} {result.get('description')}")
            entries = [r for r in response or () if r.get("type") == "searchResEntry"]
            if result["result"] == 4 and len(entries) < 2:
                entries = entries * 2  # the server saw more matches than it returned
            return entries

        entries = self._with("service", search)
        if len(entries) > 1:
            # Two entries for one login: a directory problem, never "wrong password" (nor a guess).
            raise AuthUnavailable(detail=f"ldap {self.name}: {len(entries)} entries match the login")
        return entries[0] if entries else None

    def _identity(self, entry: dict[str, Any]) -> Optional[Identity]:
        attrs = entry["attributes"]
        uid = _first(attrs.get(self.uid_attribute))
        if not uid:
            return None
        addresses = tuple(dict.fromkeys(str(v).lower() for a in self.address_attributes for v in _values(attrs.get(a))))
        return Identity(str(uid), addresses, self.name)

    def _in_group(self, entry: dict[str, Any], uid: str) -> bool:
        dn = escape_filter_chars(entry["dn"])
        flt = f"(|(member={dn})(uniqueMember={dn})(memberUid={escape_filter_chars(uid)}))"

        def search(conn: Connection) -> bool:
            _, result, response, _ = conn.search(self.require_group, flt, BASE, attributes=["1.1"], size_limit=1)
            if result["result"] not in _ANSWERS:
                raise _Outage(f"group search: {result['result']}")
            return any(r.get("type") == "searchResEntry" for r in response or ())

        return bool(self._with("service", search))

    def _check(self, login: str, password: str) -> Verdict:
        if not password:
            return BAD_PASSWORD  # RFC 4513 §5.1.2: DN + empty password is an unauthenticated bind
        entry = self._find(login)
        identity = self._identity(entry) if entry is not None else None
        if entry is None or identity is None:
            return UNKNOWN_USER

        def bind(conn: Connection) -> int:
            _, result, _, _ = conn.rebind(user=entry["dn"], password=password)
            return int(result["result"])

        code = self._with("binder", bind)
        if code == INVALID_CREDENTIALS:
            return BAD_PASSWORD
        if code != 0:
            self._drop("binder")
            raise AuthUnavailable(detail=f"ldap {self.name}: bind result {code}")
        if self.require_group and not self._in_group(entry, identity.user):
            return "not_in_group"
        return identity

    def _lookup(self, login: str) -> Optional[Identity]:
        entry = self._find(login)
        return self._identity(entry) if entry is not None else None

    def _nt_hash(self, login: str) -> Optional[tuple[Identity, bytes]]:
        if not self.nt_hash_attribute:
            return None
        entry = self._find(login, (self.nt_hash_attribute, "sambaAcctFlags"))
        identity = self._identity(entry) if entry is not None else None
        if entry is None or identity is None:
            return None
        attrs = entry["attributes"]
        if "D" in str(_first(attrs.get("sambaAcctFlags")) or ""):
            return None  # disabled account (ntlm.md §5a)
        value = str(_first(attrs.get(self.nt_hash_attribute)) or "")
        if len(value) != 32:
            return None
        try:
            nt = bytes.fromhex(value)
        except ValueError:
            return None
        if self.require_group and not self._in_group(entry, identity.user):
            return None
        return identity, nt

    # ------------------------------------------------------------------ IDirectory (reactor thread)

    def check_password(self, login: str, password: str) -> "Deferred[Verdict]":
        return self._runner.run(self._check, login, password)

    def verify_password(self, login: str, password: str) -> "Deferred[Optional[Identity]]":
        return self.check_password(login, password).addCallback(verdict_identity)

    def lookup(self, login: str) -> "Deferred[Optional[Identity]]":
        return self._runner.run(self._lookup, login)

    def nt_hash(self, login: str) -> "Deferred[Optional[tuple[Identity, bytes]]]":
        return self._runner.run(self._nt_hash, login)

    def close(self) -> None:
        """Stop this directory's thread pool (its threads' connections go with them)."""
        self._runner.close()

    def retire(self) -> "Deferred[None]":
        """A reload replaced this directory: stop its pool without blocking the reactor (BlockingRunner.retire)."""
        return self._runner.retire()


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _first(value: Any) -> Any:
    values = _values(value)
    return values[0] if values else None


def _kind(error: Exception, default: str) -> str:
    """connect | timeout | bind | search, for the error counter."""
    text = str(error).lower()
    return "timeout" if "timed out" in text or "timeout" in text else default
