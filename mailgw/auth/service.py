"""AuthService: the one pre-auth policy and credential checker that IMAP, SMTP and admin ask.

It owns the decisions the protocols must not make on their own (DESIGN.md "Pre-auth policy in
one place"): which mechanisms to offer and accept per listener and TLS state, backends in order,
the failure delay, failure budgets, and the one `auth_failed` log line fail2ban matches.
"""

from __future__ import annotations

import time

from typing import Any, Awaitable, Callable, NoReturn, Mapping, Optional, Protocol, Sequence

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.auth.base import UNKNOWN_USER, IReasonedDirectory, Verdict, first_found
from mailgw.auth.names import MAX_PASSWORD_LENGTH, clean_login, log_safe, throttle_key
from mailgw.auth.policy import ListenerPolicy, PreAuthPolicy
from mailgw.auth.ratelimit import AuthLimits, FailureLimiter
from mailgw.auth.sasl import LoginExchange, PlainExchange
from mailgw.errors import AuthFailed, AuthThrottled, AuthUnavailable
from mailgw.interfaces import ClientInfo, IAuthService, IDirectory, Identity, ISASLExchange

log = Logger()

PASSWORD_COMMAND = "PASSWORD"  # the mech= label of IMAP LOGIN in logs and metrics


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
    its ListenerPolicy (mailgw.auth.policy); a listener missing from it gets every mechanism the
    service runs, TLS first. PLAIN/LOGIN are never accepted before TLS unless
    `plaintext_without_tls` (a lab setting).
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
        self.policy = PreAuthPolicy(listeners, plaintext_without_tls)
        self.ntlm = ntlm
        self.proxy_users = frozenset(u.casefold() for u in proxy_users)
        self.reactor = reactor
        self._limiter = FailureLimiter(self.limits, reactor)
        self._on_result = on_result
        self._on_backend_time = on_backend_time  # e.g. mailgw_auth_backend_duration_seconds{backend}

    # ------------------------------------------------------------------ policy

    def supported(self) -> tuple[str, ...]:
        """Every mechanism this service can run."""
        return ("PLAIN", "LOGIN") + ((self.ntlm.mechanism,) if self.ntlm is not None else ())

    def mechanisms(self, client: ClientInfo) -> tuple[str, ...]:
        """Mechanisms to advertise now: the listener's, that this service runs and the TLS state permits."""
        return self.policy.offered(client, self.supported())

    def login_allowed(self, client: ClientInfo) -> bool:
        """Whether a user/password command (IMAP LOGIN) is accepted now (else LOGINDISABLED)."""
        return self.policy.login_allowed(client, self.supported())

    def start(self, mechanism: str, client: ClientInfo) -> ISASLExchange:
        """Begin an exchange; TLSRequired if TLS must come first, UnknownMechanism if not offered."""
        mech = mechanism.upper()
        self.policy.check_start(mech, client, self.supported())
        if mech == "PLAIN":
            return PlainExchange(self, client)
        if mech == "LOGIN":
            return LoginExchange(self, client)
        assert self.ntlm is not None
        return self.ntlm.start(self, client)

    def login(self, username: str, password: str, client: ClientInfo) -> "Deferred[Identity]":
        """IMAP LOGIN (and any plain user/password check): allowed where PLAIN or LOGIN would be.

        Refused at once, before any backend: TLSRequired before TLS, UnknownMechanism under TLS
        on a listener that takes no passwords (NTLM only).
        """
        try:
            self.policy.check_login(client, self.supported())
        except AuthFailed as e:
            return fail(e)
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

        With `directories`, its backends and NTLM mechanism replace ours and ours are retired;
        without, fresh's unused ones are. Retiring stops thread pools and helper processes off the
        reactor (an exchange still holding a retired backend gets a temporary failure).
        """
        if directories:
            replaced = (self.backends, self.ntlm)
            self.backends, self.ntlm = fresh.backends, fresh.ntlm
        else:
            replaced = (fresh.backends, fresh.ntlm)
        self.failure_delay, self.policy, self.proxy_users = fresh.failure_delay, fresh.policy, fresh.proxy_users
        self.limits = self._limiter.limits = fresh.limits
        _retire_parts(*replaced)

    def retire(self) -> "Deferred[object]":
        """Stop this (never installed) checker's backends without blocking: a reload that failed later."""
        return _retire_parts(self.backends, self.ntlm)

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


def _retire_parts(backends: Sequence[Any], ntlm: Optional[MechanismFactory]) -> "Deferred[object]":
    """Stop replaced backends' pools and an NTLM verifier's helpers; fires when all have stopped."""
    parts: list[Any] = list(backends) + [getattr(ntlm, "verifier", None)]
    stops = [maybeDeferred(getattr(part, "retire", None) or part.close) for part in parts
             if callable(getattr(part, "retire", None) or getattr(part, "close", None))]
    done: "Deferred[Any]" = gatherResults(stops, consumeErrors=True)
    done.addErrback(lambda f: log.failure("stopping replaced auth backends failed", f, event="auth.retire_error"))
    return done


def _result_label(error: Exception, reason: str) -> str:
    if isinstance(error, AuthThrottled):
        return "ratelimited"
    if isinstance(error, AuthUnavailable):
        return "temporary"
    return "unknown_user" if reason == UNKNOWN_USER else "bad_credentials"
