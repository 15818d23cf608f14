"""SMTP AUTH (RFC 4954) framing over the shared ISASLExchange: 334 challenges, '*' aborts, reply codes."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailgw.errors import AuthAborted, AuthFailed, AuthUnavailable, SASLProtocolError, TLSRequired
from mailgw.interfaces import SASLChallenge, SASLSuccess
from mailgw.smtp import wire

log = Logger()


def _decode(text: bytes) -> bytes:
    """RFC 4954 §4: '=' is an empty response; anything else must be strict base64."""
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SASLProtocolError("Cannot Base64-decode Client responses") from None


class SASLMixin:
    """AUTH for SubmissionSession; relies on its send/error/close/busy/resume members."""

    sasl: Any
    busy: bool
    tls: bool
    helo: Optional[str]
    identity: Any
    login: str
    auth_failures: int
    mail_from: Any
    hostname: str
    peer_host: str
    factory: Any
    policy: Any
    resume: Callable[[], None]

    def do_AUTH(self, arg: str) -> None:
        words = arg.split()
        # The credential service decides first: before TLS any AUTH is 530 (RFC 3207 §4, security.md A4).
        exchange: Any = None
        try:
            exchange = self.factory.auth.start(words[0] if words else "", self.client_info())  # type: ignore[attr-defined]
        except TLSRequired:
            log.info("plaintext_auth_refused rip={peer}", peer=self.peer_host, event="plaintext_auth_refused")
            self.error(wire.reply(530, "5.7.0", "Must issue a STARTTLS command first"))  # type: ignore[attr-defined]
            return
        except AuthFailed:
            pass  # not offered here: 504 below, after the state and syntax checks
        if self.helo is None:
            self.error(wire.reply(503, "5.5.1", "Error: send HELO/EHLO first"))  # type: ignore[attr-defined]
            return
        if self.identity is not None:
            self.error(wire.reply(503, "5.5.1", "Error: already authenticated"))  # type: ignore[attr-defined]
            return
        if self.mail_from is not None:
            self.error(wire.reply(503, "5.5.1", "Error: MAIL transaction in progress"))  # type: ignore[attr-defined]
            return
        if not words or len(words) > 2:
            self.error(wire.reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))  # type: ignore[attr-defined]
            return
        if exchange is None:
            self.error(wire.reply(504, "5.5.4", "Unrecognized authentication type"))  # type: ignore[attr-defined]
            return
        initial: Optional[bytes] = None
        if len(words) == 2:
            try:
                initial = _decode(words[1].encode("ascii", "replace"))
            except SASLProtocolError:
                self.error(wire.reply(501, "5.5.2", "Cannot Base64-decode Client responses"))  # type: ignore[attr-defined]
                return
        self.sasl = exchange
        self._step(initial)

    def _step(self, response: Optional[bytes]) -> None:
        self.busy = True
        exchange = self.sasl
        d = defer.maybeDeferred(exchange.step, response)
        d.addCallbacks(self._stepped, self._step_failed, callbackArgs=(exchange,))
        d.addErrback(lambda f: log.failure("smtp auth internal error", f, event="smtp.internal_error"))
        d.addBoth(lambda _: self.resume())

    def _stepped(self, result: Any, exchange: Any) -> None:
        if self.sasl is not exchange:
            return  # connection reset meanwhile
        if isinstance(result, SASLChallenge):
            self.send(b"334 " + base64.b64encode(result.data) + b"\r\n")  # type: ignore[attr-defined]
            return
        assert isinstance(result, SASLSuccess)
        self.sasl = None
        self.identity = result.identity
        self.login = result.identity.user
        log.info("smtp auth ok user={user} rip={peer} mech={mech}", user=self.login, peer=self.peer_host,
                 mech=exchange.mechanism, event="smtp.auth")
        self.send(wire.reply(235, "2.7.0", "Authentication successful"))  # type: ignore[attr-defined]

    def _step_failed(self, failure: Failure) -> None:
        self.sasl = None
        err = failure.value
        if isinstance(err, AuthUnavailable):
            # the auth service logs the one auth_failed event per failure (fail2ban counts it)
            self.send(wire.reply(454, "4.7.0", "Temporary authentication failure"))  # type: ignore[attr-defined]
            return
        if isinstance(err, AuthAborted):
            self.error(wire.reply(501, "5.0.0", "Authentication aborted"))  # type: ignore[attr-defined]
            return
        if isinstance(err, SASLProtocolError):
            self.sasl_error(wire.reply(501, "5.5.2", err.public))
            return
        if not isinstance(err, AuthFailed):
            failure.raiseException()
        self.auth_failures += 1
        if self.auth_failures >= self.policy.max_auth_failures:
            self.close(wire.reply(421, "4.7.0", f"{self.hostname} Error: too many errors"))  # type: ignore[attr-defined]
            return
        self.error(wire.reply(535, "5.7.8", "Authentication credentials invalid"))  # type: ignore[attr-defined]

    def sasl_response(self, line: bytes) -> None:
        """A client line while an AUTH exchange waits for it."""
        if line.strip() == b"*":
            self.sasl = None
            self.error(wire.reply(501, "5.0.0", "Authentication aborted"))  # type: ignore[attr-defined]
            return
        try:
            data = _decode(line.strip())
        except SASLProtocolError:
            self.sasl_error(wire.reply(501, "5.5.2", "Cannot Base64-decode Client responses"))
            return
        self._step(data)

    def sasl_error(self, reply: bytes) -> None:
        """A malformed exchange: 501/500, the exchange ends, the connection stays usable (counted)."""
        self.sasl = None
        self.auth_failures += 1
        if self.auth_failures >= self.policy.max_auth_failures:
            self.close(wire.reply(421, "4.7.0", f"{self.hostname} Error: too many errors"))  # type: ignore[attr-defined]
            return
        self.error(reply)  # type: ignore[attr-defined]
