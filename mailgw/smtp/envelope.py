"""MAIL FROM and RCPT TO for the submission session: envelope syntax, parameters, send-as, recipients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.logger import Logger
from twisted.python.failure import Failure

from mailgw.observe.failures import log_failure
from mailgw.smtp import wire
from mailgw.smtp.wire import AddressError

log = Logger()


def _safe(text: str) -> str:
    """Escape CR, LF, NUL and non-printables for logs (security.md preamble)."""
    return text.encode("unicode_escape").decode("ascii")[:300]


def _sender(arg: str) -> str:
    """The address of a MAIL argument for a log line (`FROM:<a@b> SIZE=1` -> `a@b`), else the escaped argument."""
    try:
        return _safe(wire.parse_path(arg, "FROM", allow_empty=True, utf8_allowed=True).address)
    except AddressError:
        return _safe(arg)


class EnvelopeMixin:
    """do_MAIL / do_RCPT for SubmissionSession; relies on its send/error/busy/resume members."""

    tls: bool
    helo: Optional[str]
    identity: Any
    login: str
    mail_from: Optional[wire.PathArgument]
    rcpts: list[str]
    rcpt_keys: set[str]  # lower-cased rcpts, for the duplicate check
    local_users: dict[str, str]
    busy: bool
    closing: bool
    peer_host: str
    policy: Any
    factory: Any

    if TYPE_CHECKING:  # provided by SubmissionSession
        def send(self, data: bytes) -> None: ...
        def error(self, data: bytes) -> None: ...
        def resume(self) -> None: ...

    def do_MAIL(self, arg: str) -> None:
        if not self.tls:
            self.error(wire.reply(530, "5.7.0", "Must issue a STARTTLS command first"))
            return
        if self.helo is None:
            self.error(wire.reply(503, "5.5.1", "Error: send HELO/EHLO first"))
            return
        if self.identity is None:
            log.info("reject=relay rip={peer} from={addr}", peer=self.peer_host, addr=_sender(arg), event="smtp.reject",
                     reject="relay")
            self.error(wire.reply(530, "5.7.0", "Authentication required"))
            return
        if self.mail_from is not None:
            self.error(wire.reply(503, "5.5.1", "Error: nested MAIL command"))
            return
        try:
            path = wire.parse_path(arg, "FROM", allow_empty=True, utf8_allowed=self.policy.smtputf8)
            self._check_mail_params(path)
        except AddressError as e:
            self.error(e.reply())
            return
        if not self.policy.may_send_as(self.identity, path.address):
            log.warn("reject=sender_mismatch rip={peer} user={user} from={addr}", peer=self.peer_host,
                     user=_safe(self.login), addr=_safe(path.address), event="smtp.reject", reject="sender_mismatch")
            self.error(wire.reply(553, "5.7.1",
                                  f"<{path.address}>: Sender address rejected: not owned by user {self.login}"))
            return
        self.mail_from = path
        self.send(wire.reply(250, "2.1.0", "Ok"))

    def _check_mail_params(self, path: wire.PathArgument) -> None:
        for name, value in path.params.items():
            if name == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    raise AddressError(501, "5.5.4", "Bad SIZE parameter")
                if int(value) > self.policy.max_message_size:
                    raise AddressError(552, "5.3.4", "Message size exceeds fixed limit")
            elif name == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    raise AddressError(501, "5.5.4", "Bad BODY parameter")
            elif name == "AUTH":
                pass  # RFC 4954 §5: accepted, never trusted
            elif name == "SMTPUTF8" and self.policy.smtputf8:
                if value is not None:
                    raise AddressError(501, "5.5.4", "SMTPUTF8 takes no value")
            else:
                raise AddressError(555, "5.5.4", f"Unsupported option: {name}")

    def do_RCPT(self, arg: str) -> None:
        if self.mail_from is None:
            self.error(wire.reply(503, "5.5.1", "Error: need MAIL command"))
            return
        try:
            utf8 = "SMTPUTF8" in self.mail_from.params  # RFC 6531 §3.4
            path = wire.parse_path(arg, "TO", allow_empty=False, utf8_allowed=utf8)
            if path.params:
                raise AddressError(555, "5.5.4", f"Unsupported option: {next(iter(path.params))}")
        except AddressError as e:
            self.error(e.reply())
            return
        addr = path.address
        if addr.lower() in self.rcpt_keys:  # a set: RCPT stays O(1) whatever max_recipients is
            self.send(wire.reply(250, "2.1.5", "Ok"))
            return
        if len(self.rcpts) >= self.policy.max_recipients:
            self.send(wire.reply(452, "4.5.3", "Error: too many recipients"))  # RFC 5321 §4.5.3.1.10
            return
        if not self.policy.is_local(addr):
            self.rcpts.append(addr)
            self.rcpt_keys.add(addr.lower())
            self.send(wire.reply(250, "2.1.5", "Ok"))
            return
        self.busy = True
        d = self.factory.local.resolve(addr)
        d.addCallbacks(self._rcpt_resolved, self._rcpt_lookup_failed, callbackArgs=(addr,), errbackArgs=(addr,))
        d.addErrback(lambda f: log.failure("smtp rcpt", f, event="smtp.internal_error"))
        d.addBoth(lambda _: self.resume())

    def _rcpt_resolved(self, user: Optional[str], addr: str) -> None:
        if self.closing or self.mail_from is None:
            return
        if user is None:
            log.info("reject=unknown_recipient rip={peer} user={user} to={addr}", peer=self.peer_host,
                     user=_safe(self.login), addr=_safe(addr), event="smtp.reject", reject="unknown_recipient")
            self.error(wire.reply(550, "5.1.1",
                                  f"<{addr}>: Recipient address rejected: User unknown in local recipient table"))
            return
        self.rcpts.append(addr)
        self.rcpt_keys.add(addr.lower())
        self.local_users[addr] = user
        self.send(wire.reply(250, "2.1.5", "Ok"))

    def _rcpt_lookup_failed(self, failure: Failure, addr: str) -> None:
        # A directory that is down or ambiguous (two entries with one address) is an ordinary
        # condition answered 451: one warning line, not a critical traceback.
        log_failure(log, failure, "smtp recipient lookup failed for {addr}", addr=_safe(addr), event="smtp.lookup_failed")
        self.send(wire.reply(451, "4.3.0", f"<{addr}>: Temporary lookup failure"))
