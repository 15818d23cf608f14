"""WinbindNTLMVerifier: NTLMv2 pass-through to Samba's `ntlm_auth --helper-protocol=ntlm-server-1`.

For Active Directory via winbind: we keep building the challenge, parsing the Type 3 and refusing
NTLMv1 ourselves (mailgw.auth.ntlm); each response is sent to one of a small pool of long-lived
helper processes (one request in flight each), driven by the reactor, no threads. A helper that
dies or does not answer within `timeout` is replaced and the attempt is AuthUnavailable.
Protocol (stateless per request): `Key: value` / `Key:: base64` lines ended by `.` (ntlm.md §5c).
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Any, Callable, Optional, Sequence

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.auth.ntlm import SessionVerifier
from mailgw.errors import AuthUnavailable
from mailgw.interfaces import Identity, INTLMVerifier

log = Logger()

_MAX_REPLY = 16384

# What ntlm_auth says when the credentials are not good: NT_STATUS names, and the descriptions that
# Samba 4.17 actually prints (e.g. NT_STATUS_WRONG_PASSWORD appears as "When trying to update a
# password, ... the current password is not correct."). Anything else ("Reading winbind reply
# failed!", "no logon servers ...") is an outage.
_CREDENTIAL_ERRORS = ("logon_failure", "wrong_password", "no_such_user", "account_disabled", "account_locked_out",
                      "account_expired", "password_expired", "password_must_change", "invalid_logon_hours",
                      "invalid_workstation", "account_restriction", "invalid_parameter",
                      "current password is not correct", "attempted logon is invalid",
                      "specified account does not exist", "currently disabled", "automatically locked",
                      "has expired", "account restriction", "parameter is incorrect")


def is_credential_error(text: str) -> bool:
    """True if an ntlm_auth Authentication-Error means bad credentials (not "cannot check now")."""
    lowered = text.lower()
    return any(fragment in lowered for fragment in _CREDENTIAL_ERRORS)


Lookup = Callable[[str], "Deferred[Optional[Identity]]"]


def encode_request(user: str, domain: str, server_challenge: bytes, nt_response: bytes) -> bytes:
    """One ntlm-server-1 request (names base64 so any character is safe on the line protocol)."""
    lines = [f"Username:: {base64.b64encode(user.encode()).decode()}",
             f"NT-Domain:: {base64.b64encode(domain.encode()).decode()}",
             f"LANMAN-Challenge: {server_challenge.hex()}",
             f"NT-Response: {nt_response.hex()}",
             "Request-User-Session-Key: Yes", "."]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_reply(lines: list[bytes]) -> dict[str, str]:
    """`Key: value` and `Key:: base64` lines to a dict (keys lower-cased)."""
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if ":: " in line:
            key, _, value = line.partition(":: ")
            try:
                value = base64.b64decode(value).decode("utf-8", "replace")
            except ValueError:
                value = ""
        else:
            key, _, value = line.partition(": ")
        out[key.strip().lower()] = value.strip()
    return out


class _Helper(ProcessProtocol):
    """One helper process; at most one request in flight."""

    def __init__(self, pool: "WinbindNTLMVerifier") -> None:
        self.pool = pool
        self.buffer = b""
        self.lines: list[bytes] = []
        self.pending: Optional[Deferred[dict[str, str]]] = None
        self.timer: Any = None
        self.alive = False
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.alive = True

    def send(self, request: bytes, timeout: float) -> "Deferred[dict[str, str]]":
        self.pending = Deferred()
        self.timer = self.pool.reactor.callLater(timeout, self._timed_out)
        self.transport.write(request)  # type: ignore[union-attr]
        return self.pending

    def _timed_out(self) -> None:
        self.timer = None
        self.alive = False
        self._fail("helper timed out")
        _signal(self, "KILL")

    def _fail(self, why: str) -> None:
        pending, self.pending = self.pending, None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if pending is not None:
            pending.errback(AuthUnavailable(detail=f"ntlm_auth: {why}"))

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _MAX_REPLY:
            self._fail("reply too long")
            _signal(self, "KILL")
            return
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.rstrip(b"\r") == b".":
                if not self.lines:
                    continue  # Samba 4.17 writes a second "." after a failure: never a reply of its own
                reply, self.lines = parse_reply(self.lines), []
                pending, self.pending = self.pending, None
                if self.timer is not None and self.timer.active():
                    self.timer.cancel()
                self.timer = None
                if pending is not None:
                    pending.callback(reply)
                self.pool._idle(self)
            else:
                self.lines.append(line)

    def errReceived(self, data: bytes) -> None:
        log.warn("ntlm_auth: {text}", text=data[:500].decode("utf-8", "replace").strip(), event="auth.winbind_stderr")

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        self._fail("helper exited")
        self.pool._ended(self)
        self.ended.callback(None)


@implementer(INTLMVerifier)
class WinbindNTLMVerifier(SessionVerifier):
    """Verifies NTLMv2 responses through `ntlm_auth` helper processes (`[auth.ntlm] source = "winbind"`).

    `argv` is `[auth.ntlm] winbind_helper`, e.g. ["/usr/bin/ntlm_auth", "--helper-protocol=ntlm-server-1"].
    `lookup` (e.g. AuthService.lookup over an AD LDAP backend) maps the user to an Identity with
    addresses; without one, or when it finds nothing, the identity is the lower-cased user name.
    """

    def __init__(self, argv: Sequence[str], reactor: Any, helpers: int = 2, timeout: float = 10.0,
                 lookup: Optional[Lookup] = None, env: Optional[dict[str, str]] = None, name: str = "winbind") -> None:
        self.argv = list(argv)
        self.reactor = reactor
        self.size = max(1, helpers)
        self.timeout = timeout
        self.name = name
        self._lookup = lookup
        self._env = env
        self._helpers: list[_Helper] = []
        self._free: deque[_Helper] = deque()
        self._queue: deque[tuple[bytes, Deferred[dict[str, str]]]] = deque()
        self._stopping = False
        self._trigger: Any = None  # added with the first helper: construction touches no reactor state

    def _spawn(self) -> _Helper:
        if self._trigger is None:
            self._trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        helper = _Helper(self)
        self.reactor.spawnProcess(helper, self.argv[0], self.argv, env=self._env)
        self._helpers.append(helper)
        return helper

    def _idle(self, helper: _Helper) -> None:
        if self._queue:
            request, d = self._queue.popleft()
            helper.send(request, self.timeout).chainDeferred(d)
        else:
            self._free.append(helper)

    def _ended(self, helper: _Helper) -> None:
        if helper in self._helpers:
            self._helpers.remove(helper)
        if helper in self._free:
            self._free.remove(helper)
        if self._queue and not self._stopping:
            self._idle(self._spawn())

    def _request(self, request: bytes) -> "Deferred[dict[str, str]]":
        while self._free:
            helper = self._free.popleft()
            if helper.alive:
                return helper.send(request, self.timeout)
        if len(self._helpers) < self.size:
            return self._spawn().send(request, self.timeout)
        d: Deferred[dict[str, str]] = Deferred()
        self._queue.append((request, d))
        return d

    async def _verify(self, user: str, domain: str, server_challenge: bytes,
                      nt_response: bytes) -> Optional[tuple[Identity, bytes]]:
        reply = await self._request(encode_request(user, domain, server_challenge, nt_response))
        if reply.get("authenticated", "").lower() != "yes":
            error = reply.get("authentication-error", reply.get("error", ""))
            if not is_credential_error(error):
                # winbindd unreachable, DC down, protocol trouble: not the user's fault
                raise AuthUnavailable(detail=f"ntlm_auth: {error or 'no reason given'}")
            return None
        try:
            key = bytes.fromhex(reply.get("user-session-key", ""))
        except ValueError:
            key = b""
        identity = await self._lookup(user) if self._lookup is not None else None
        return (identity or Identity(user.lower(), (), self.name)), key

    def stop(self) -> "Deferred[object]":
        """Terminate the helper processes; fires when all have exited (KILL after 5 s)."""
        self._stopping = True
        while self._queue:
            self._queue.popleft()[1].errback(AuthUnavailable(detail="ntlm_auth: shutting down"))
        helpers = list(self._helpers)
        for helper in helpers:
            _signal(helper, "TERM")

        def kill() -> None:
            for helper in helpers:
                if not helper.ended.called:
                    _signal(helper, "KILL")

        killer = self.reactor.callLater(5, kill)
        done: Deferred[Any] = gatherResults([h.ended for h in helpers])
        done.addBoth(lambda r: (killer.cancel() if killer.active() else None, r)[1])
        return done


    def retire(self) -> "Deferred[object]":
        """A reload replaced this verifier: stop its helpers now rather than at shutdown."""
        if self._trigger is not None:
            self.reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        return self.stop()


def _signal(helper: _Helper, name: str) -> None:
    try:
        helper.transport.signalProcess(name)  # type: ignore[union-attr]
    except ProcessExitedAlready:
        pass


WinbindVerifier = WinbindNTLMVerifier  # the name assemble.py uses
