"""AuthService: the one pre-auth policy and credential checker that IMAP, SMTP and admin ask.

It owns the decisions the protocols must not make on their own (DESIGN.md "Pre-auth policy in
one place"): which mechanisms to offer and accept per listener and TLS state, backends in order,
the failure delay, failure budgets, and the one `auth_failed` log line fail2ban matches.
"""

from __future__ import annotations

import time

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, NoReturn, Mapping, Optional, Protocol, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.auth.base import UNKNOWN_USER, IReasonedDirectory, Verdict, first_found
from mailgw.auth.names import MAX_PASSWORD_LENGTH, clean_login, log_safe, throttle_key
from mailgw.auth.ratelimit import AuthLimits, FailureLimiter
from mailgw.auth.sasl import LoginExchange, PlainExchange
from mailgw.errors import AuthFailed, AuthThrottled, AuthUnavailable, TLSRequired, UnknownMechanism
from mailgw.interfaces import ClientInfo, IAuthService, IDirectory, Identity, ISASLExchange

log = Logger()

PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
PASSWORD_COMMAND = "PASSWORD"
_SECTIONS = {"imap": "imap", "smtp": "submission"}  # ClientInfo.protocol -> config section of its listeners  # the mech= label of IMAP LOGIN in logs and metrics


def expand_mechanisms(names: Sequence[str]) -> tuple[str, ...]:
    """Upper-case config names; `basic` stands for PLAIN and LOGIN. Order kept, duplicates dropped."""
    out: list[str] = []
    for name in names:
        for mech in (("PLAIN", "LOGIN") if name.upper() == "BASIC" else (name.upper(),)):
            if mech not in out:
                out.append(mech)
    return tuple(out)


@dataclass(frozen=True)
class ListenerPolicy:
    """What one IMAP/SMTP virtual server allows: its mechanisms and whether TLS comes first."""

    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    require_tls: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mechanisms", expand_mechanisms(self.mechanisms))


class MechanismFactory(Protocol):
    """Something that starts an extra mechanism (the NTLM acceptor)."""

    mechanism: str

    def start(self, service: "AuthService", client: ClientInfo) -> ISASLExchange:
        """A fresh exchange for this client."""


# A credential check: cleaned login -> (identity, "") or (None, reason for the logs).
Ask = Callable[[str], Awaitable[tuple[Optional[Identity], str]]]

# (protocol, mechanism, backend, result) with result ok|bad_credentials|unknown_user|temporary|ratelimited|aborted
ResultHook = Callable[[str, str, str, str], None]


@implementer(IAuthService)
class AuthService:
    """Checks credentials against `backends` in order, with throttling and a failure delay.

    `reactor` provides the clock and callLater (a MemoryReactorClock in tests). `failure_delay`
    (seconds) is when a failure is answered, counted from the start of the attempt, so unknown
    users and wrong passwords take the same time. `listeners` maps a listener name (ClientInfo.
    listener, or its config key: "imap.NAME" for protocol imap, "submission.NAME" for smtp) to
    its ListenerPolicy; when the map is given, a listener missing from it must use TLS first.
    Without a map every mechanism the service has is allowed. PLAIN/LOGIN are never accepted
    before TLS unless `plaintext_without_tls` (a lab setting).
    `on_result(protocol, mechanism, backend, result)` and `on_backend_time(backend, seconds)` feed
    metrics. `ntlm` adds the NTLM mechanism (see mailgw.auth.ntlm.NTLMAcceptor). Canonical ids in
    `proxy_users` may use a PLAIN authorization identity other than their own.
    """

    def __init__(self, backends: Sequence[IDirectory], reactor: IReactorTime, failure_delay: float = 2.0,
                 limits: Optional[AuthLimits] = None, ntlm: Optional[MechanismFactory] = None,
                 listeners: Optional[Mapping[str, ListenerPolicy]] = None,
                 proxy_users: Sequence[str] = (), plaintext_without_tls: bool = False,
                 on_result: Optional[ResultHook] = None,
                 on_backend_time: Optional[Callable[[str, float], None]] = None) -> None:
        self.backends = list(backends)
        self.failure_delay = float(failure_delay)
        self.limits = limits or AuthLimits()
        self.listeners = dict(listeners or {})
        self.ntlm = ntlm
        self.proxy_users = frozenset(u.casefold() for u in proxy_users)
        self.plaintext_without_tls = plaintext_without_tls
        self.reactor = reactor
        self._limiter = FailureLimiter(self.limits, reactor)
        self._warned: set[str] = set()
        self._on_result = on_result
        self._on_backend_time = on_backend_time  # e.g. mailgw_auth_backend_duration_seconds{backend}

    # ------------------------------------------------------------------ policy

    def supported(self) -> tuple[str, ...]:
        """Every mechanism this service can run."""
        return ("PLAIN", "LOGIN") + ((self.ntlm.mechanism,) if self.ntlm is not None else ())

    def _permitted(self, mechanism: str, client: ClientInfo, allowed: Sequence[str], require_tls: bool) -> bool:
        if mechanism not in self.supported() or mechanism not in allowed:
            return False
        if not client.tls and require_tls:
            return False  # "Require secure channel": no credential of any kind before TLS
        if not client.tls and mechanism in PLAINTEXT_MECHANISMS and not self.plaintext_without_tls:
            return False  # RFC 3501 §6.2.3 LOGINDISABLED; RFC 4954 §4: no plaintext passwords in clear
        return True

    def _find_policy(self, client: ClientInfo) -> Optional[ListenerPolicy]:
        """The listener's policy, keyed by ClientInfo.listener or by its config section name."""
        section = _SECTIONS.get(client.protocol, client.protocol)
        for key in (client.listener, f"{section}.{client.listener}"):
            if key in self.listeners:
                return self.listeners[key]
        return None

    def _policy(self, client: ClientInfo) -> tuple[tuple[str, ...], bool]:
        policy = self._find_policy(client)
        if policy is not None:
            return policy.mechanisms, policy.require_tls
        if self.listeners:
            # Policies are configured but none names this listener: fail closed (TLS first).
            if client.listener not in self._warned:
                self._warned.add(client.listener)
                log.warn("no auth policy for listener {listener}: requiring TLS", listener=client.listener,
                         event="auth.no_policy")
            return self.supported(), True
        return self.supported(), False

    def mechanisms(self, client: ClientInfo, allowed: Sequence[str], require_tls: bool) -> tuple[str, ...]:
        """Mechanisms to advertise now: those in `allowed` this service runs and TLS state permits."""
        own_allowed, own_tls = self._policy(client)
        names = tuple(m for m in expand_mechanisms(allowed) if m in own_allowed)
        return tuple(m for m in names if self._permitted(m, client, names, require_tls or own_tls))

    def start(self, mechanism: str, client: ClientInfo) -> ISASLExchange:
        """Begin an exchange; UnknownMechanism if not offered, TLSRequired if TLS must come first."""
        mech = mechanism.upper()
        allowed, require_tls = self._policy(client)
        if mech not in self.supported() or mech not in allowed:
            raise UnknownMechanism()
        if not self._permitted(mech, client, allowed, require_tls):
            raise TLSRequired()
        if mech == "PLAIN":
            return PlainExchange(self, client)
        if mech == "LOGIN":
            return LoginExchange(self, client)
        assert self.ntlm is not None
        return self.ntlm.start(self, client)

    def login(self, username: str, password: str, client: ClientInfo) -> "Deferred[Identity]":
        """IMAP LOGIN (and any plain user/password check): allowed where PLAIN or LOGIN would be."""
        allowed, require_tls = self._policy(client)
        if not any(m in allowed for m in PLAINTEXT_MECHANISMS):
            return fail(UnknownMechanism())  # this listener takes no passwords (e.g. NTLM only)
        if not any(self._permitted(m, client, allowed, require_tls) for m in PLAINTEXT_MECHANISMS):
            return fail(TLSRequired())
        return self.check_password(username, password, client, PASSWORD_COMMAND)

    # ------------------------------------------------------------------ checking

    def check_password(self, login: str, password: str, client: ClientInfo, mechanism: str,
                       authzid: str = "") -> "Deferred[Identity]":
        """Verify a password against the backends in order; failures arrive after the delay."""

        async def ask(cleaned: str) -> tuple[Optional[Identity], str]:
            if not password:
                return None, "empty_password"  # RFC 4513 §5.1.2: would be an unauthenticated bind
            if len(password) > MAX_PASSWORD_LENGTH:
                return None, "malformed:password"
            return await self._ask_backends(cleaned, password)

        return self.check(login, client, mechanism, ask, authzid)

    def check(self, login: str, client: ClientInfo, mechanism: str, ask: Ask, authzid: str = "",
              started: Optional[float] = None) -> "Deferred[Identity]":
        """Run one credential check `ask(cleaned_login)` with budgets, delay and logs around it.

        `ask` returns (identity, "") or (None, reason), or raises AuthUnavailable / AuthFailed.
        Mechanisms other than PLAIN/LOGIN (NTLM) call this with their own verification.
        """
        t0 = self.reactor.seconds() if started is None else started
        return Deferred.fromCoroutine(self._check(login, client, mechanism, ask, authzid, t0))

    async def _check(self, login: str, client: ClientInfo, mechanism: str, ask: Ask, authzid: str,
                     t0: float) -> Identity:
        key = throttle_key(login)
        if not self._limiter.allowed(client.peer_host, key):
            # Over budget: the same reply as a failure, and no backend is asked (no lockout oracle).
            await self._failed(client, mechanism, login, AuthThrottled(), t0, count=False)
        cleaned = clean_login(login)
        if cleaned is None:
            await self._failed(client, mechanism, login, AuthFailed("malformed:username"), t0)
        assert cleaned is not None
        token = self._limiter.begin(client.peer_host, key)
        try:
            identity, reason = await ask(cleaned)
        except AuthUnavailable as e:
            self._limiter.end(token, failed=False)  # an outage is not the user's failure
            return await self._failed(client, mechanism, login, e, t0, count=False)
        except AuthFailed as e:
            identity, reason = None, e.reason
        except Exception as e:  # a verifier bug: never a success, never a leaked in-flight count
            log.failure("credential check failed", Failure(), mech=mechanism, event="auth.backend_error")
            self._limiter.end(token, failed=False)
            return await self._failed(client, mechanism, login, AuthUnavailable(detail=repr(e)), t0, count=False)
        if identity is not None and authzid and not self._authzid_ok(identity, login, authzid):
            identity, reason = None, "authzid_mismatch"
        if identity is None:
            self._limiter.end(token, failed=True)
            return await self._failed(client, mechanism, login, AuthFailed(reason), t0, count=False)
        self._limiter.end(token, failed=False)
        if authzid and authzid.casefold() not in self._own_names(identity, login):
            target = await self.lookup(authzid)
            if target is None:
                return await self._failed(client, mechanism, login, AuthFailed("authzid_unknown"), t0)
            identity = target
        self._succeeded(client, mechanism, login, identity)
        return identity

    def reject(self, client: ClientInfo, mechanism: str, login: str, reason: str,
               error: Optional[Exception] = None, started: Optional[float] = None) -> "Deferred[Any]":
        """Fail an exchange with AuthFailed(reason) (or `error`) after the delay; counted and logged."""
        err = error if error is not None else AuthFailed(reason)
        t0 = self.reactor.seconds() if started is None else started
        count = not isinstance(err, (AuthUnavailable, AuthThrottled))
        return Deferred.fromCoroutine(self._failed(client, mechanism, login, err, t0, count=count))

    def _authzid_ok(self, identity: Identity, login: str, authzid: str) -> bool:
        return authzid.casefold() in self._own_names(identity, login) or identity.user.casefold() in self.proxy_users

    @staticmethod
    def _own_names(identity: Identity, login: str) -> set[str]:
        return {identity.user.casefold(), login.strip().casefold()} | {a.casefold() for a in identity.addresses}

    async def _ask_backends(self, login: str, password: str) -> tuple[Optional[Identity], str]:
        outage: Optional[AuthUnavailable] = None
        reason = UNKNOWN_USER
        for backend in self.backends:
            started = self.reactor.seconds()
            try:
                verdict: Verdict | None
                if IReasonedDirectory.providedBy(backend):
                    verdict = await backend.check_password(login, password)
                else:
                    verdict = await backend.verify_password(login, password)
                    verdict = verdict if verdict is not None else "bad_credentials"
            except AuthUnavailable as e:
                outage = e
                continue
            except Exception as e:  # a backend bug must not become "BAD Server error" or a success
                log.failure("backend {backend} failed", Failure(), backend=backend.name, event="auth.backend_error")
                outage = AuthUnavailable(detail=f"{backend.name}: {e!r}")
                continue
            finally:
                self._backend_time(backend.name, self.reactor.seconds() - started)
            if isinstance(verdict, Identity):
                return verdict, ""
            if verdict != UNKNOWN_USER:
                reason = verdict if reason == UNKNOWN_USER else reason
        if outage is not None:
            raise outage  # a down backend might have known the user: never call it a bad password
        return None, reason

    async def lookup_async(self, address: str) -> Optional[Identity]:
        return await first_found(self.backends, lambda backend: backend.lookup(address))

    def adopt(self, fresh: "AuthService", directories: bool) -> None:
        """Reload: take `fresh`'s settings in place (protocols keep this object); failure windows are kept.

        With `directories`, its backends and NTLM mechanism replace ours too.
        """
        if directories:
            self.backends, self.ntlm = fresh.backends, fresh.ntlm
        self.failure_delay, self.listeners, self.proxy_users = fresh.failure_delay, fresh.listeners, fresh.proxy_users
        self.plaintext_without_tls = fresh.plaintext_without_tls
        self.limits = self._limiter.limits = fresh.limits

    def throttled(self) -> list[dict[str, object]]:
        """Client networks and (network, account) pairs over their failure budget now (for the manhole)."""
        wall = time.time()
        return [{"ip": net, "user": user, "failures": used, "until": wall + left}
                for net, user, used, left in self._limiter.over_budget()]

    def close(self) -> None:
        """Stop the backends' thread pools (at shutdown they stop by themselves)."""
        for backend in self.backends:
            close = getattr(backend, "close", None)
            if callable(close):
                close()

    def lookup(self, address: str) -> "Deferred[Optional[Identity]]":
        """Resolve a login or address across the backends in order; AuthUnavailable if unsure."""
        address = address.strip()
        if not address or len(address) > 320 or any(ord(c) < 0x20 or c == "\x7f" for c in address):
            return succeed(None)  # RFC 5321 §4.5.3.1: 64 + 1 + 255; no controls (LDAP escapes the rest)
        return Deferred.fromCoroutine(self.lookup_async(address))

    # ------------------------------------------------------------------ outcomes

    async def _failed(self, client: ClientInfo, mechanism: str, login: str, error: Exception,
                      t0: float, count: bool = True) -> NoReturn:
        """Log, count, wait out the failure delay (never blocking the reactor), then raise `error`."""
        reason = getattr(error, "reason", "backend_down" if isinstance(error, AuthUnavailable) else "error")
        if count:
            self._limiter.record_failure(client.peer_host, throttle_key(login))
        self._log_failure(client, mechanism, login, reason, isinstance(error, AuthUnavailable))
        self._report(client, mechanism, "", _result_label(error, reason))
        factor = self._limiter.delay_factor(client.peer_host)
        wait = t0 + self.failure_delay * factor - self.reactor.seconds()
        if wait > 0:
            await deferLater(self.reactor, wait)  # never blocks the reactor; cancellable
        raise error

    def _log_failure(self, client: ClientInfo, mechanism: str, login: str, reason: str, temporary: bool) -> None:
        fmt = ('auth_failed proto={proto} listener={listener} rip={rip} user="{user}" mech={mech} '
               'reason={reason}')
        fields = dict(proto=client.protocol, listener=client.listener or "-", rip=client.peer_host,
                      user=log_safe(login), mech=mechanism, reason=reason, event="auth_failed")
        (log.warn if temporary else log.info)(fmt, **fields)

    def _succeeded(self, client: ClientInfo, mechanism: str, login: str, identity: Identity) -> None:
        log.info('auth_ok proto={proto} listener={listener} rip={rip} user="{user}" account={account} '
                 'mech={mech} backend={backend}', proto=client.protocol, listener=client.listener or "-",
                 rip=client.peer_host, user=log_safe(login), account=log_safe(identity.user),
                 mech=mechanism, backend=identity.backend, event="auth_ok")
        self._report(client, mechanism, identity.backend, "ok")

    def _backend_time(self, backend: str, seconds: float) -> None:
        if self._on_backend_time is not None:
            try:
                self._on_backend_time(backend, seconds)
            except Exception:
                log.failure("auth backend time hook failed", Failure(), event="auth.hook_error")

    def _report(self, client: ClientInfo, mechanism: str, backend: str, result: str) -> None:
        if self._on_result is not None:
            try:
                self._on_result(client.protocol, mechanism, backend, result)
            except Exception:
                log.failure("auth result hook failed", Failure(), event="auth.hook_error")


def _result_label(error: Exception, reason: str) -> str:
    if isinstance(error, AuthThrottled):
        return "ratelimited"
    if isinstance(error, AuthUnavailable):
        return "temporary"
    return "unknown_user" if reason == UNKNOWN_USER else "bad_credentials"
