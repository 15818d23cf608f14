"""Any-state and not-authenticated commands: CAPABILITY, NOOP, LOGOUT, ID, ENABLE, STARTTLS, LOGIN, AUTHENTICATE, IDLE."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailgw.errors import AuthFailed, AuthUnavailable, TLSRequired, UnknownMechanism
from mailgw.imap.session import AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, Reply
from mailgw.imap.wire.grammar import Request
from mailgw.imap.wire.response import tagged
from mailgw.interfaces import Identity, SASLChallenge, SASLSuccess

if TYPE_CHECKING:
    from mailgw.imap.session import IMAPSession

log = Logger()

MAX_SASL_LINE = 12 * 1024  # security.md E29
PRIVACY_LOGIN = "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
PRIVACY_AUTH = "Plaintext authentication disabled."
ALERT_LOGIN = (b"* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. "
               b"If anyone was listening, the password was exposed.\r\n")


def cmd_capability(s: "IMAPSession", req: Request) -> bytes:
    s.send(b"* CAPABILITY " + b" ".join(s.capabilities()) + b"\r\n")
    return tagged(req.tag, b"OK", b"Capability completed.")


def cmd_noop(s: "IMAPSession", req: Request) -> Any:
    line = tagged(req.tag, b"OK", b"NOOP completed.")
    if s.state == SELECTED:
        d = s.report_updates()  # RFC 3501 §6.1.2: NOOP is the polling point
        d.addCallback(lambda _: line)
        return d
    return line


def cmd_logout(s: "IMAPSession", req: Request) -> None:
    s.send(b"* BYE Logging out\r\n" + tagged(req.tag, b"OK", b"Logout completed."))
    s.state = "logout"
    s.close_folder()
    s.close()


def cmd_id(s: "IMAPSession", req: Request) -> bytes:
    s.send(b'* ID ("name" "mailgw")\r\n')
    return tagged(req.tag, b"OK", b"ID completed.")


def cmd_enable(s: "IMAPSession", req: Request) -> bytes:
    s.send(b"* ENABLED\r\n")  # RFC 5161: nothing we offer needs enabling
    return tagged(req.tag, b"OK", b"Enabled.")


def cmd_starttls(s: "IMAPSession", req: Request) -> None:
    if s.tls:
        raise Reply(b"BAD", "TLS is already active.")
    if s.tls_source is None:
        raise Reply(b"BAD", "STARTTLS is not available on this server.")
    s.send(tagged(req.tag, b"OK", b"Begin TLS negotiation now."))
    # CVE-2011-0411: whatever followed the STARTTLS line in plaintext is never executed.
    pending = s.framer.drop_buffer()
    s.transport.startTLS(s.tls_source.context_factory())  # type: ignore[union-attr]
    s.tls = True
    s.handshake_pending = True
    if pending:
        if pending[0] == 0x16 and hasattr(s.transport, "protocol") and s.transport.protocol is not s:  # type: ignore[union-attr]
            s.transport.protocol.dataReceived(pending)  # type: ignore[union-attr]  # an early ClientHello
        else:
            log.warn("starttls_injection rip={rip} bytes={n} action=discard", rip=s.peer_host, n=len(pending),
                     event="imap.starttls_injection")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def cmd_login(s: "IMAPSession", req: Request) -> Any:
    user, password = req.args
    assert isinstance(user, bytes) and isinstance(password, bytes)
    # The credential service decides (TLSRequired / UnknownMechanism at once, no backend asked).
    d = s.auth.login(_text(user), _text(password), s.client_info())
    d.addCallback(lambda identity: _logged_in(s, req, identity))
    d.addErrback(_login_refused, s)
    d.addErrback(_auth_failed, s, req)
    return d


def _login_refused(failure: Failure, s: "IMAPSession") -> Any:
    """The service's refusals of LOGIN itself, worded as Dovecot words them (security.md A4)."""
    if failure.check(TLSRequired):
        log.info("plaintext_auth_refused rip={rip} mech=LOGIN", rip=s.peer_host, event="imap.plaintext_refused")
        s.send(ALERT_LOGIN)  # as Dovecot: the user should know the password crossed the wire in clear
        raise Reply(b"NO", PRIVACY_LOGIN, "PRIVACYREQUIRED")
    if failure.check(UnknownMechanism):
        raise Reply(b"NO", "LOGIN is not enabled on this server.", "CANNOT")
    return failure


def _too_many_sessions(s: "IMAPSession", identity: Identity) -> bool:
    if s.registry is None:
        return False
    same = [x for x in s.registry.sessions() if isinstance(x, type(s)) and x is not s
            and x.user == identity.user and x.peer_host == s.peer_host]
    return len(same) >= s.limits.max_user_ip_sessions


def _logged_in(s: "IMAPSession", req: Request, identity: Identity) -> Any:
    if _too_many_sessions(s, identity):
        s.send(tagged(req.tag, b"NO", b"Maximum number of connections from user+IP exceeded", b"LIMIT"))
        s.bye(b"Maximum number of connections from user+IP exceeded")
        return None
    d = s.store.open_account(identity.user)

    def opened(account: Any) -> Optional[bytes]:
        if s.closing:
            return None
        s.identity, s.account, s.state = identity, account, AUTHENTICATED
        s.reset_timer()
        log.info("imap login {user} from {peer}", user=identity.user, peer=s.peer_host, event="imap.login")
        return tagged(req.tag, b"OK", b"Logged in", b"CAPABILITY " + b" ".join(s.capabilities()))

    d.addCallback(opened)
    return d


def _auth_failed(failure: Failure, s: "IMAPSession", req: Request) -> Any:
    err = failure.value
    if isinstance(err, TLSRequired):
        raise Reply(b"NO", PRIVACY_AUTH, "PRIVACYREQUIRED")
    if isinstance(err, AuthUnavailable):
        raise Reply(b"NO", "Temporary authentication failure", "UNAVAILABLE")
    if isinstance(err, AuthFailed):
        s.auth_failures += 1
        line = tagged(req.tag, b"NO", b"Authentication failed.", b"AUTHENTICATIONFAILED")
        if s.auth_failures >= s.limits.max_auth_failures:
            s.send(line)
            s.bye(b"Too many invalid authentication attempts")
            return None
        return line
    return failure


def cmd_authenticate(s: "IMAPSession", req: Request) -> Any:
    mech, initial = req.args
    assert isinstance(mech, str)
    try:
        exchange = s.auth.start(mech, s.client_info())  # TLSRequired comes first, for any name
    except TLSRequired:
        log.info("plaintext_auth_refused rip={rip} mech={mech}", rip=s.peer_host, mech=mech[:20],
                 event="imap.plaintext_refused")
        raise Reply(b"NO", PRIVACY_AUTH, "PRIVACYREQUIRED") from None
    except UnknownMechanism:
        raise Reply(b"NO", "Unsupported authentication mechanism.") from None
    first: Optional[bytes] = None
    if initial is not None:
        assert isinstance(initial, bytes)
        first = _b64(initial)
    return _SASL(s, req, exchange).start(first)


def _b64(line: bytes) -> bytes:
    if line == b"=":
        return b""  # RFC 4959: an empty initial response
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise Reply(b"BAD", "Invalid base64") from None


class _SASL:
    """One AUTHENTICATE exchange: challenges on one unwrapped line (`+ <b64>`), `*` cancels."""

    def __init__(self, s: "IMAPSession", req: Request, exchange: Any) -> None:
        self.s, self.req, self.exchange = s, req, exchange
        self.done: Deferred[Any] = Deferred()
        self.final = False

    def start(self, first: Optional[bytes]) -> "Deferred[Any]":
        self._step(first)
        return self.done

    def _step(self, response: Optional[bytes]) -> None:
        d = maybeDeferred(self.exchange.step, response)
        d.addCallbacks(self._stepped, self._error)
        d.addErrback(self.done.errback)  # a bug in a mechanism ends this command, not the connection

    def _stepped(self, result: Any) -> None:
        if isinstance(result, SASLChallenge):
            self._ask(result.data)
        elif isinstance(result, SASLSuccess):
            if result.data:
                self.final = True
                self.identity = result.identity
                self._ask(result.data)
                return
            self._success(result.identity)

    def _success(self, identity: Identity) -> None:
        d = maybeDeferred(_logged_in, self.s, self.req, identity)
        d.addCallbacks(self.done.callback, self.done.errback)

    def _error(self, failure: Failure) -> None:
        try:
            result = _auth_failed(failure, self.s, self.req)
        except Exception:
            self.done.errback()
            return
        if isinstance(result, Failure):
            self.done.errback(result)
        else:
            self.done.callback(result)

    def _ask(self, data: bytes) -> None:
        s = self.s
        if s.closing:
            return
        s.send(b"+ " + base64.b64encode(data) + b"\r\n")  # one line, never wrapped (ntlm.md §2)
        s.mode, s.line_handler = "sasl", self._line
        s.busy = False
        s.pump()

    def _line(self, line: bytes) -> None:
        s = self.s
        s.mode, s.line_handler = None, None
        s.busy = True
        if line.strip() == b"*":
            self.done.errback(Reply(b"BAD", "Authentication aborted"))
            return
        if len(line) > MAX_SASL_LINE:
            self.done.errback(Reply(b"BAD", "Line too long"))
            return
        if self.final:
            self._success(self.identity)
            return
        try:
            decoded = _b64(line.strip())
        except Reply as e:
            self.done.errback(e)
            return
        self._step(decoded)


def cmd_idle(s: "IMAPSession", req: Request) -> "Deferred[Any]":
    """RFC 2177: updates are pushed until the client sends DONE (and only DONE ends it)."""
    done: Deferred[Any] = Deferred()

    def on_line(line: bytes) -> None:
        if line.strip().upper() != b"DONE":
            s.send(b"* BAD Expected DONE.\r\n")
            return
        s.mode, s.line_handler = None, None
        s.stop_keepalive()
        s.reset_timer()
        s.busy = True
        done.callback(tagged(req.tag, b"OK", b"Idle completed."))

    s.send(b"+ idling\r\n")
    s.reset_timer()  # IDLE refreshes the autologout timer
    s.start_keepalive()
    s.mode, s.line_handler = "idle", on_line
    if s.state == SELECTED:
        d = s.report_updates()
        d.addBoth(lambda _: _idle_ready(s))
    else:
        _idle_ready(s)
    return done


def _idle_ready(s: "IMAPSession") -> None:
    if s.mode == "idle":
        s.busy = False
        if s.dirty and s.folder is not None:
            s.folder_changed(s.folder)  # a change that arrived while the first refresh ran
        s.pump()


ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
NONAUTH = frozenset({NOT_AUTHENTICATED})
AUTHED = frozenset({AUTHENTICATED, SELECTED})

COMMANDS = {
    "CAPABILITY": (cmd_capability, ANY, True),
    "NOOP": (cmd_noop, ANY, True),
    "LOGOUT": (cmd_logout, ANY, True),
    "ID": (cmd_id, ANY, True),
    "ENABLE": (cmd_enable, AUTHED, True),
    "STARTTLS": (cmd_starttls, NONAUTH, False),
    "LOGIN": (cmd_login, NONAUTH, False),
    "AUTHENTICATE": (cmd_authenticate, NONAUTH, False),
    "IDLE": (cmd_idle, AUTHED, True),
}
