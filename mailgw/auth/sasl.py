"""The PLAIN and LOGIN SASL exchanges (RFC 4616, draft-murchison-sasl-login), shared by IMAP and SMTP.

Each exchange is a small state machine: `step(response)` takes the client's *decoded* response
(None when the client sent no initial response) and returns a Deferred firing with a
SASLChallenge (send `data` base64-encoded, on one line) or a SASLSuccess. Credential checks,
failure delays, throttling and logs belong to the service (`AuthCheck`), not to the mechanism.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mailgw.auth.names import MAX_LOGIN_LENGTH, MAX_PASSWORD_LENGTH
from mailgw.interfaces import ClientInfo, Identity, ISASLExchange, SASLChallenge, SASLSuccess

# Exactly these prompts: Thunderbird and Outlook match on them.
LOGIN_USERNAME_PROMPT = b"Username:"
LOGIN_PASSWORD_PROMPT = b"Password:"

_MAX_PLAIN = 2 * MAX_LOGIN_LENGTH + MAX_PASSWORD_LENGTH + 2


class AuthCheck(Protocol):
    """What a mechanism asks of the service."""

    def check_password(self, login: str, password: str, client: ClientInfo, mechanism: str,
                       authzid: str = "") -> "Deferred[Identity]":
        """Verify (throttled, delayed on failure, logged); fails with AuthFailed/AuthUnavailable/AuthThrottled."""

    def reject(self, client: ClientInfo, mechanism: str, login: str, reason: str) -> "Deferred[Any]":
        """Fail the exchange with AuthFailed(reason) after the failure delay, counted and logged."""


def _decode(data: bytes) -> Optional[str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _success(identity: Identity) -> SASLSuccess:
    return SASLSuccess(identity)


@implementer(ISASLExchange)
class PlainExchange:
    """RFC 4616 PLAIN: one message `[authzid] NUL authcid NUL passwd`."""

    mechanism = "PLAIN"

    def __init__(self, checker: AuthCheck, client: ClientInfo) -> None:
        self._checker = checker
        self._client = client
        self._state = "start"

    def step(self, response: Optional[bytes]) -> "Deferred[SASLChallenge | SASLSuccess]":
        if self._state == "start" and response is None:
            self._state = "wait"
            return succeed(SASLChallenge(b""))
        if self._state not in ("start", "wait") or response is None:
            self._state = "done"
            return self._checker.reject(self._client, self.mechanism, "", "malformed:sasl_state")
        self._state = "done"
        parts = response.split(b"\0") if len(response) <= _MAX_PLAIN else []
        if len(parts) != 3:
            return self._checker.reject(self._client, self.mechanism, "", "malformed:plain")
        texts = [_decode(p) for p in parts]
        authzid, authcid, password = texts
        if authzid is None or authcid is None or password is None:
            return self._checker.reject(self._client, self.mechanism, "", "malformed:utf8")
        d = self._checker.check_password(authcid, password, self._client, self.mechanism, authzid)
        return d.addCallback(_success)


@implementer(ISASLExchange)
class LoginExchange:
    """LOGIN: prompts `Username:` then `Password:`; accepts the user name as initial response (smtplib)."""

    mechanism = "LOGIN"

    def __init__(self, checker: AuthCheck, client: ClientInfo) -> None:
        self._checker = checker
        self._client = client
        self._state = "start"
        self._login = ""

    def step(self, response: Optional[bytes]) -> "Deferred[SASLChallenge | SASLSuccess]":
        if self._state == "start":
            if not response:  # no (or an empty) initial response: ask for the user name
                self._state = "user"
                return succeed(SASLChallenge(LOGIN_USERNAME_PROMPT))
            self._state = "user"
        if response is None or self._state not in ("user", "password"):
            self._state = "done"
            return self._checker.reject(self._client, self.mechanism, self._login, "malformed:sasl_state")
        if self._state == "user":
            login = _decode(response) if len(response) <= MAX_LOGIN_LENGTH * 4 else None
            if login is None:
                self._state = "done"
                return self._checker.reject(self._client, self.mechanism, "", "malformed:login")
            self._login = login
            self._state = "password"
            return succeed(SASLChallenge(LOGIN_PASSWORD_PROMPT))
        self._state = "done"
        password = _decode(response) if len(response) <= MAX_PASSWORD_LENGTH * 4 else None
        if password is None:
            return self._checker.reject(self._client, self.mechanism, self._login, "malformed:password")
        return self._checker.check_password(self._login, password, self._client, self.mechanism).addCallback(_success)
