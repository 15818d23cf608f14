"""The IMAP session: one connection's state machine on a twisted Protocol (RFC 3501 §3).

Reads through the Framer, runs one command at a time (pipelined ones wait, reading pauses past a
cap), holds the state (not authenticated / authenticated / selected / logout), the timers, and the
points where untagged mailbox updates may be sent (RFC 3501 §5.2, §7.4.1).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.errors import AuthFailed, AuthUnavailable, MailError
from mailgw.imap import metrics, pacing, tcpopts
from mailgw.imap.config import IMAPPolicy
from mailgw.imap.names import BadName
from mailgw.imap.updates import SELECTED, SelectedState
from mailgw.imap.wire import framing
from mailgw.imap.wire.grammar import BadTag, Request, command_name, parse_command
from mailgw.imap.wire.reader import ParseError, tag_of_lines
from mailgw.imap.wire.response import tagged
from mailgw.interfaces import ClientInfo, IAccount, IFolder, IFolderListener, Identity
from mailgw.net.closing import close_transport

__all__ = ["IMAPSession", "Reply", "NOT_AUTHENTICATED", "AUTHENTICATED", "SELECTED", "LOGOUT"]

log = Logger()

NOT_AUTHENTICATED, AUTHENTICATED, LOGOUT = "nonauth", "auth", "logout"
BAD_TAG = b"* BAD Error in IMAP command received by server.\r\n"

Handler = Callable[["IMAPSession", Request], Any]


class Reply(Exception):
    """Raised by a handler to end its command with a tagged NO/BAD."""

    def __init__(self, status: bytes, text: str, code: str = "") -> None:
        self.status, self.text, self.code = status, text, code
        super().__init__(text)


@implementer(IFolderListener, IPushProducer, IHandshakeListener)
class IMAPSession(SelectedState, Protocol):
    """One client connection."""

    commands: dict[str, tuple[Handler, frozenset[str], bool]] = {}  # filled by mailgw.imap.commands.table
    ABORT_AFTER = 10.0  # seconds between a close and a forced abort

    def __init__(self, policy: IMAPPolicy, auth: Any, store: Any, reactor: Any, tls: Any = None,
                 implicit_tls: bool = False, registry: Any = None, fetch_cache: Any = None,
                 presenter: Any = None) -> None:
        self.policy = policy
        self.fetch_cache = fetch_cache
        self.presenter = presenter  # calendaring (mailgw.imap.calendaring.Presenter), None: messages as stored
        self._presented: tuple[Any, Any] = (None, None)
        self.limits = policy.limits
        self.auth = auth
        self.store = store
        self.reactor = reactor
        self.tls_source = tls
        self.implicit_tls = implicit_tls
        self.registry = registry
        self.framer = framing.Framer(self.limits.max_line, self.limits.spool_threshold)
        self.state = NOT_AUTHENTICATED
        self.tls = implicit_tls
        self.identity: Optional[Identity] = None
        self.account: Optional[IAccount] = None
        self.folder: Optional[IFolder] = None
        self.uids: list[int] = []  # this session's sequence-number map (position + 1)
        self.uid_validity = 0  # of the selected folder, as announced at SELECT
        self.keywords: set[str] = set()  # keywords announced in FLAGS since SELECT (RFC 3501 §7.2.6)
        self.dirty = False  # another view changed the folder
        self.mode: Optional[str] = None  # None | "idle" | "sasl"
        self.line_handler: Optional[Callable[[bytes], Any]] = None
        self.busy = False
        self.closing = False
        self.auth_failures = 0
        self.bad_commands = 0
        self.long_lines = 0
        self.write_paused = False
        self.read_paused = False
        self.resume_hooks: list[Callable[[], None]] = []
        self.enabled: set[str] = set()
        self._in_pump = False
        self._lost = False
        self.handshake_pending = implicit_tls  # set again by STARTTLS
        self._command = ""
        self._started = 0.0
        self._timer: Any = None
        self._abort: Any = None
        self._keepalive: Any = None
        self._pump_later: Any = None  # a pump deferred to the next reactor turn (see pump)
        self.peer_host, self.peer_port = "", 0
        self._socket: Any = None

    # ------------------------------------------------------------------ connection
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer_host = getattr(peer, "host", "") or ""
        self.peer_port = getattr(peer, "port", 0) or 0
        self._socket = tcpopts.raw_socket(self.transport)
        tcpopts.set_nodelay(self._socket)
        try:
            self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        except (AttributeError, RuntimeError):
            pass
        if self.registry is not None:
            self.registry.add(self.policy.name, "imap", self)
        metrics.connection_opened(self.policy.name)
        self.reset_timer()
        caps = b" ".join(self.capabilities())
        self.send(b"* OK [CAPABILITY %s] mailgw ready.\r\n" % caps)
        log.info("imap connect {peer} listener={listener}", peer=self.peer_host, listener=self.policy.name,
                 event="imap.connect")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self._lost:
            self._lost = True
            metrics.connection_closed(self.policy.name)
            if self.handshake_pending:
                metrics.tls_handshake(self.policy.name, "failed", "")
        self.closing = True
        for call in (self._timer, self._keepalive, self._abort, self._pump_later):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._keepalive = self._abort = self._pump_later = None
        self.framer.drop_buffer()
        self.close_folder()
        if self.registry is not None:
            self.registry.remove(self)

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: the TLS layer finished its handshake (implicit TLS or STARTTLS)."""
        self.handshake_pending = False
        metrics.tls_handshake(self.policy.name, "ok", self.client_info().tls_version)

    @property
    def peer(self) -> str:
        return f"{self.peer_host}:{self.peer_port}"

    @property
    def user(self) -> str:
        return self.identity.user if self.identity is not None else ""

    def presentation(self) -> Any:
        """The calendaring form FETCH and SEARCH show, fixed per selection: a reload shows after the next SELECT."""
        if self.presenter is None or self.folder is None:
            return None
        if self._presented[0] is not self.folder:
            self._presented = (self.folder, self.presenter.current())
        return self._presented[1]

    def kick(self) -> None:
        """Admin: end the session."""
        self.bye(b"Disconnected by administrator.")

    def client_info(self) -> ClientInfo:
        version = cipher = ""
        if self.tls:
            try:
                handle = self.transport.getHandle()  # type: ignore[union-attr]
                version = handle.get_protocol_version_name() or ""
                cipher = handle.get_cipher_name() or ""
            except Exception:
                pass
        return ClientInfo("imap", self.policy.name, self.peer_host, self.peer_port, self.tls, version, cipher)

    # ------------------------------------------------------------------ output
    def send(self, data: bytes) -> None:
        if not self.closing and self.transport is not None:
            self.transport.write(data)

    def send_pieces(self, pieces: list[bytes]) -> None:
        if not self.closing and self.transport is not None:
            self.transport.writeSequence(pieces)

    def bye(self, text: bytes) -> None:
        self.send(b"* BYE " + text + b"\r\n")
        self.close()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.framer.drop_buffer()
            if self.transport is not None:
                try:
                    self.transport.unregisterProducer()  # type: ignore[attr-defined]  # TLS shutdown waits for producers
                except (AttributeError, RuntimeError):
                    pass
                close_transport(self.transport)  # over TLS: no wait for the client's close_notify (issue 18)
                # a TLS peer that never finishes its handshake (or never reads) cannot hold the socket
                self._abort = self.reactor.callLater(self.ABORT_AFTER, self._abort_now)

    def _abort_now(self) -> None:
        self._abort = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None and not self._lost:
            abort()

    # IPushProducer: the transport tells us when its write buffer is full
    def pauseProducing(self) -> None:
        self.write_paused = True

    def resumeProducing(self) -> None:
        self.write_paused = False
        hooks, self.resume_hooks = self.resume_hooks, []
        for hook in hooks:
            self.reactor.callLater(0, hook)
        if not hooks and not self.busy:
            self.reactor.callLater(0, self.pump)  # input that waited for the client to read its replies

    def stopProducing(self) -> None:
        self.closing = True

    # ------------------------------------------------------------------ timers
    def reset_timer(self) -> None:
        """Restart the autologout timer; before login the deadline stays absolute from connect (issue 12)."""
        if self.state == NOT_AUTHENTICATED and self._timer is not None and self._timer.active():
            return  # a client dripping bytes or NOOPs cannot hold an unauthenticated slot (as SMTP does)
        timeout = self.limits.preauth_timeout if self.state == NOT_AUTHENTICATED else self.limits.autologout
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        elif not self.closing:
            self._timer = self.reactor.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        log.info("imap timeout {peer}", peer=self.peer_host, event="imap.timeout")
        self.bye(b"Disconnected for inactivity.")

    def start_keepalive(self) -> None:
        self._keepalive = self.reactor.callLater(self.limits.idle_keepalive, self._still_here)

    def stop_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None

    def _still_here(self) -> None:
        self.send(b"* OK Still here\r\n")
        self.start_keepalive()

    # ------------------------------------------------------------------ input
    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.framer.feed(data)
        self.pump()
        if self.framer.in_command():
            tcpopts.quickack(self._socket)  # a literal without its CRLF yet: see tcpopts.py
        if (self.busy or self.write_paused or self._pump_later is not None) and not self.read_paused and (
                self.framer.buffered() > self.limits.max_buffer
                or self.framer.pending_lines() > self.limits.max_pipelined):
            self.read_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def pump(self) -> None:
        if self._in_pump or self._pump_later is not None:
            return
        self._in_pump = True
        started, count = time.monotonic(), 0
        try:
            # a client that does not read its replies stops being read (security.md G38)
            while not self.busy and not self.closing and not self.write_paused:
                if count >= self.limits.max_pipelined or (count and time.monotonic() - started >= pacing.SLICE):
                    # 64 KiB of pipelined NOOPs is thousands of commands: let other connections run between
                    # slices (issue 12); input keeps queueing (and pauses past max_buffer) meanwhile
                    self._pump_later = self.reactor.callLater(0, self._pump_again)
                    break
                event = self.framer.pull(line_mode=self.mode is not None)
                if event is None:
                    break
                self.handle_event(event)
                count += 1
        finally:
            self._in_pump = False
        if self._pump_later is not None:
            return
        if self.read_paused and not self.busy and not self.closing and not self.write_paused:
            self.read_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def _pump_again(self) -> None:
        self._pump_later = None
        if not self.closing:
            self.pump()

    def handle_event(self, event: framing.Event) -> None:
        if isinstance(event, framing.Command):
            if self.state != NOT_AUTHENTICATED:
                self.reset_timer()  # RFC 3501 §5.4: only a complete command counts as activity
            try:
                self.run_command(event)  # handlers copy any literal they keep before going async
            finally:
                event.close()
        elif isinstance(event, framing.RawLine):
            handler = self.line_handler
            if handler is not None:
                try:
                    handler(event.data)
                except Exception:
                    log.failure("imap continuation handler failed", event="imap.internal_error")
                    self.bye(b"Internal error")
        elif isinstance(event, framing.LiteralOffer):
            self.offer(event)
        elif isinstance(event, framing.LineTooLong):
            self.long_lines += 1
            if self.mode == "sasl" and self.line_handler is not None and self.long_lines == 1:
                self.line_handler(b"=" * (self.limits.max_line + 1))  # ends the exchange: BAD Line too long
                return
            if self.long_lines > 1:
                self.bye(b"Line too long")
            else:
                self.send(b"* BAD Line too long\r\n")
                self.bad()
        elif isinstance(event, framing.BadLiteral):
            if event.nonsync:
                self.bye(b"Invalid literal size")  # cannot know where the literal ends
            else:
                tag = tag_of_lines(event.lines)
                self.send(tagged(tag, b"BAD", b"Invalid literal size") if tag else BAD_TAG)
                self.bad()
        elif isinstance(event, framing.Discarded):
            tag = tag_of_lines(event.lines)
            self.send(tagged(tag, b"NO", b"Literal too big", b"TOOBIG") if tag else BAD_TAG)

    def offer(self, event: framing.LiteralOffer) -> None:
        """Decide on a literal before any '+' (APPENDLIMIT, pre-auth cap, per-command caps).

        Every literal comes here, `{0}`/`{0+}` included, so the count and the byte caps below bound
        the memory one command can hold (issue 12, CVE-2025-61600).
        """
        lines = event.lines
        tag = tag_of_lines(lines)
        name = command_name(framing.Command(lines[:1]))
        held = self.framer.line_bytes() + self.framer.literal_bytes()
        if self.state == NOT_AUTHENTICATED:
            if event.size > self.limits.preauth_literal:
                self.bye(b"Literal size too large")
                return
            if held + event.size > self.limits.preauth_command:
                self.bye(b"Command too long")
                return
        too_many = b""
        if len(lines) > self.limits.max_literals:
            too_many = b"Too many literals"
        elif self.framer.line_bytes() > self.limits.command_lines_total:
            too_many = b"Command too long"
        if tag is None or too_many:
            if event.nonsync:
                self.bye(too_many if tag else b"Error in IMAP command received by server.")
                return
            self.framer.reject()
            self.send(BAD_TAG if tag is None else tagged(tag, b"BAD", too_many))
            return
        limit = self.limits.append_limit if name == "APPEND" else self.limits.command_literal
        if name != "APPEND" and self.framer.literal_bytes() + event.size > self.limits.command_literals_total:
            limit = min(limit, max(0, self.limits.command_literals_total - self.framer.literal_bytes()))
        if event.size > limit:
            self.framer.reject()
            if not event.nonsync:
                self.send(tagged(tag, b"NO", b"Literal too big (APPENDLIMIT %d)" % limit, b"TOOBIG"))
            return
        self.framer.accept()
        if not event.nonsync:
            self.send(b"+ Ready for literal data\r\n")

    def bad(self) -> None:
        self.bad_commands += 1
        if self.bad_commands >= self.limits.max_bad_commands:
            self.bye(b"Too many invalid IMAP commands.")

    # ------------------------------------------------------------------ commands
    def run_command(self, cmd: framing.Command) -> None:
        try:
            req = parse_command(cmd)
        except BadTag:
            self.send(BAD_TAG)
            self.bad()
            return
        except ParseError as e:
            tag = tag_of_lines(cmd.lines) or b"*"
            self.send(tagged(tag, b"BAD", e.text.encode("ascii", "replace")))
            self.bad()
            return
        except Exception:  # a parser bug must not end the connection (the property tests look for these)
            log.failure("imap parser failed", event="imap.parser_error")
            self.send(tagged(tag_of_lines(cmd.lines) or b"*", b"BAD", b"Error in IMAP command received by server."))
            self.bad()
            return
        entry = self.commands.get(req.name)
        if entry is None:
            self.send(tagged(req.tag, b"BAD", b"Unknown command"))
            self.bad()
            return
        handler, states, expunge_ok = entry
        if self.state not in states:
            self.send(tagged(req.tag, b"BAD", self._state_text(states)))
            self.bad()
            return
        self.bad_commands = 0
        # RFC 3501 §7.4.1: no EXPUNGE after FETCH/STORE/SEARCH; the UID forms may have them
        self.run(lambda: handler(self, req), None, req, expunge_ok or req.uid)

    @staticmethod
    def _state_text(states: frozenset[str]) -> bytes:
        if states == frozenset({SELECTED}):
            return b"No mailbox selected."
        if NOT_AUTHENTICATED not in states:
            return b"Not authenticated."
        return b"Already authenticated."

    def run(self, fn: Callable[..., Any], arg: Any = None, req: Optional[Request] = None,
            expunge_ok: bool = True) -> None:
        """Run a handler; its result (a tagged line, or None) may come later through a Deferred."""
        self.busy = True
        self._command = req.name if req is not None else ""
        self._started = self.reactor.seconds()
        d = maybeDeferred(fn) if arg is None else maybeDeferred(fn, arg)
        tag = req.tag if req is not None else None
        d.addCallback(self._finish, tag, expunge_ok)
        d.addErrback(self._failed, tag)
        d.addBoth(self._done)

    def _measure(self, status: bytes) -> None:
        if self._command:
            metrics.record_command(self._command, status, self.reactor.seconds() - self._started)
            self._command = ""

    def _finish(self, result: Any, tag: Optional[bytes], expunge_ok: bool) -> Any:
        if not isinstance(result, bytes):
            return None
        self._measure(result.split(b" ", 2)[1] if result.count(b" ") >= 2 else b"OK")
        if self.state == SELECTED and self.dirty and expunge_ok and self.mode is None:
            d = self.report_updates()
            d.addCallback(lambda _: self.send(result))
            return d
        self.send(result)
        return None

    def _failed(self, failure: Failure, tag: Optional[bytes]) -> None:
        err = failure.value
        tag = tag or b"*"
        self._measure(err.status if isinstance(err, Reply) else b"NO")
        if isinstance(err, Reply):
            code = err.code.encode("ascii") if err.code else b""
            self.send(tagged(tag, err.status, err.text.encode("utf-8", "replace"), code))
            if err.status == b"BAD":
                self.bad()
        elif isinstance(err, BadName):
            self.send(tagged(tag, b"NO", err.text.encode("utf-8", "replace"), err.code.encode("ascii")))
        elif isinstance(err, (AuthFailed, AuthUnavailable, MailError)):
            code = err.imap_code.encode("ascii") if err.imap_code else b""
            self.send(tagged(tag, b"NO", err.public.encode("utf-8", "replace"), code))
        else:
            log.failure("imap command failed", failure, peer=self.peer_host, event="imap.internal_error")
            self.send(tagged(tag, b"NO", b"Internal error occurred. Refer to server log for more information.",
                             b"SERVERBUG"))

    def _done(self, _: Any) -> None:
        self.busy = False
        if self.closing:
            return
        if self.mode == "idle" and self.dirty and self.folder is not None:
            self.folder_changed(self.folder)  # a change that arrived while the last push ran
            return
        if not self._in_pump:
            self.pump()

    # ------------------------------------------------------------------ capabilities
    def mechanisms(self) -> tuple[str, ...]:
        """AUTH= to advertise: the credential service decides (none before TLS on a TLS-first server, security.md A4)."""
        return tuple(self.auth.mechanisms(self.client_info()))

    def capabilities(self) -> list[bytes]:
        caps = [b"IMAP4rev1", b"LITERAL+"]
        if self.state == NOT_AUTHENTICATED:
            mechs = self.mechanisms()
            caps.append(b"SASL-IR")
            caps += [b"ID", b"ENABLE", b"IDLE"]
            if not self.tls and self.tls_source is not None:
                caps.append(b"STARTTLS")
            caps += [b"AUTH=" + m.encode("ascii") for m in mechs]
            if not self.auth.login_allowed(self.client_info()):
                caps.append(b"LOGINDISABLED")  # RFC 3501 §6.2.3
            return caps
        caps += [b"ID", b"ENABLE", b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE", b"UNSELECT", b"CHILDREN",
                 b"SPECIAL-USE", b"APPENDLIMIT=%d" % self.limits.append_limit]
        return caps
