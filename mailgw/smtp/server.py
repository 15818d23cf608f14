"""The submission session: an ESMTP state machine on a twisted Protocol (RFC 5321, 6409, 3207, 4954).

TLS is always required before AUTH and AUTH before MAIL. Input is pulled one command at a
time from a bounded CommandFramer, so STARTTLS drops exactly the plaintext that followed it
(CVE-2011-0411) and DATA hands the raw rest of the segment to the DataDecoder, which alone
decides where the message ends (no smuggling, T4/T5). MAIL/RCPT live in `envelope.py`,
AUTH in `sasl.py`, the end of DATA (delivery) in `delivery.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.interfaces import ClientInfo, Identity
from mailgw.net.closing import close_transport
from mailgw.net.flow import ReplyFlow
from mailgw.observe import metrics
from mailgw.smtp import wire
from mailgw.smtp.delivery import DataTransaction
from mailgw.smtp.envelope import EnvelopeMixin
from mailgw.smtp.sasl import SASLMixin
from mailgw.smtp.wire import BareNewline, Flood, Line, TooLong

if TYPE_CHECKING:
    from mailgw.smtp.factory import SubmissionFactory

log = Logger()

MAX_PIPELINED_INPUT = 64 * 1024  # stop reading when this much pipelined input waits (resume under half)
ABORT_AFTER = 10.0  # seconds from a final reply to a forced close, for a peer that never reads it


@implementer(IHandshakeListener)
class SubmissionSession(EnvelopeMixin, SASLMixin, Protocol):
    """One client connection on a [submission.NAME] listener.

    Replies flow through a ReplyFlow registered as the transport's producer: while the client
    does not read them no further command runs, and past MAX_PIPELINED_INPUT nothing more is
    read (issue 12: 2 MB of pipelined EHLO without reading grew the server by 265 MB).
    """

    factory: "SubmissionFactory"
    transport: Any  # ITCPTransport + ITLSTransport (or the TLS protocol on implicit-TLS ports)

    def __init__(self, factory: "SubmissionFactory", implicit_tls: bool) -> None:
        self.factory = factory
        self.policy = factory.policy
        self.hostname = factory.hostname
        self.implicit_tls = implicit_tls
        self.tls = implicit_tls
        self.handshake_pending = implicit_tls  # set again by STARTTLS; counted as IMAP counts them
        self.framer = wire.CommandFramer(wire.SASL_LINE_LIMIT)
        self.busy = False  # waiting on a Deferred: input stays buffered
        self.closing = False
        self.flow = ReplyFlow(factory.reactor, self.pump, MAX_PIPELINED_INPUT)
        self._in_pump = False
        self._abort: Any = None
        self.helo: Optional[str] = None
        self.identity: Optional[Identity] = None
        self.login = ""
        self.errors = 0
        self.auth_failures = 0
        self.sasl: Any = None  # the running ISASLExchange during AUTH
        self.mail_from: Optional[wire.PathArgument] = None
        self.rcpts: list[str] = []
        self.rcpt_keys: set[str] = set()
        self.local_users: dict[str, str] = {}  # local recipient -> canonical user
        self.data: Optional[DataTransaction] = None
        self.peer_host, self.peer_port = "", 0
        self._idle: Any = None

    # ----------------------------------------------------------------- connection

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer_host, self.peer_port = getattr(peer, "host", ""), getattr(peer, "port", 0)
        self.factory.session_opened(self)
        self.flow.attach(self.transport)
        log.info("smtp connect {peer} on {listener}", peer=self.peer_host, listener=self.factory.name,
                 event="smtp.connect")
        self._touch()
        self.send(wire.reply(220, "", f"{self.hostname} ESMTP mailgw"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closing = True
        if self.handshake_pending:
            self.handshake_pending = False
            metrics.tls_handshakes_total.labels(listener=self.factory.name, result="failed", version="none").inc()
        for call in (self._idle, self._abort):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._abort = None
        self.flow.stopProducing()
        self.framer.take_buffer()
        if self.data is not None:
            self.data.abort()
            self.data = None
        self.factory.session_closed(self)

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: the TLS layer finished its handshake (implicit TLS or STARTTLS)."""
        self.handshake_pending = False
        version = self.tls_details()[0] or "none"
        metrics.tls_handshakes_total.labels(listener=self.factory.name, result="ok", version=version).inc()

    def client_info(self) -> ClientInfo:
        version, cipher = self.tls_details()
        return ClientInfo("smtp", self.factory.name, self.peer_host, self.peer_port, self.tls, version, cipher)

    def tls_details(self) -> tuple[str, str]:
        if not self.tls:
            return "", ""
        try:
            conn = self.transport.getHandle()
            return conn.get_protocol_version_name() or "", conn.get_cipher_name() or ""
        except Exception:
            return "", ""

    def send(self, data: bytes) -> None:
        if not self.closing:
            if data[:1] in (b"4", b"5"):
                metrics.smtp_rejects_total.labels(listener=self.factory.name, code=data[:3].decode()).inc()
            self.transport.write(data)

    def close(self, data: bytes = b"") -> None:
        """Final reply and close; nothing more is read or answered."""
        if self.closing:
            return
        if data:
            self.send(data)
        self.closing = True
        self.framer.take_buffer()
        self.flow.detach()  # a TLS transport closes only once its producer is gone
        close_transport(self.transport)  # over TLS: no wait for the client's close_notify (issue 18)
        # a client that never reads the final reply cannot keep the socket and its buffer
        self._abort = self.factory.reactor.callLater(ABORT_AFTER, self._abort_now)

    def _abort_now(self) -> None:
        self._abort = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.policy.idle_timeout)
        elif not self.closing:
            self._idle = self.factory.reactor.callLater(self.policy.idle_timeout, self._timed_out)

    def _timed_out(self) -> None:
        log.info("smtp idle timeout {peer}", peer=self.peer_host, event="smtp.timeout")
        self.close(wire.reply(421, "4.4.2", f"{self.hostname} Error: timeout exceeded"))

    def kick(self) -> None:
        self.close(wire.reply(421, "4.3.2", f"{self.hostname} Service shutting down"))

    @property
    def peer(self) -> str:
        """`host:port`, as IMAP sessions show it in the manhole's sessions()."""
        return f"{self.peer_host}:{self.peer_port}"

    @property
    def user(self) -> str:
        return self.login

    # ----------------------------------------------------------------- input pump

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        if self.data is not None and self.data.receiving:
            self._touch()  # RFC 5321 §4.5.3.2.5: the timer runs per data block
            self._data_bytes(data)
            return
        self.framer.feed(data)
        self.pump()

    def pump(self) -> None:
        """Run buffered commands until one has to wait or the client stops reading; bound what stays buffered."""
        if self._in_pump:
            return  # a command finished synchronously inside the loop below: the loop carries on
        self._in_pump = True
        try:
            while (not self.busy and not self.closing and not self.flow.write_paused
                   and (self.data is None or not self.data.receiving)):
                ev = self.framer.next_event()
                if ev is None:
                    break
                self._event(ev)
        finally:
            self._in_pump = False
        self._input_changed()

    def _input_changed(self) -> None:
        if not self.closing:
            self.flow.update_reading(self.framer.buffered)

    def resume(self) -> None:
        """An asynchronous command finished: continue with what was pipelined behind it."""
        self.busy = False
        if not self.closing:
            self.pump()

    def _event(self, ev: wire.FramerEvent) -> None:
        self._touch()  # only complete lines count: a trickled partial command never keeps the session
        if isinstance(ev, Flood):
            log.warn("smtp line flood from {peer}", peer=self.peer_host, event="smtp.flood")
            self.close(wire.reply(421, "4.7.0", f"{self.hostname} Error: Line too long, closing"))
        elif isinstance(ev, TooLong):
            if self.sasl is not None:
                self.sasl_error(wire.reply(500, "5.5.6", "Authentication Exchange line is too long"))
            else:
                self.error(wire.reply(500, "5.5.2", "Error: Line too long"))
        elif isinstance(ev, BareNewline):
            log.warn("smtp bare LF in command from {peer}", peer=self.peer_host, event="smtp.reject", reject="bare_lf")
            self.error(wire.reply(500, "5.5.2", "Error: bare <LF> received"))
        elif isinstance(ev, Line):
            if self.sasl is not None:
                self.sasl_response(ev.data)
            else:
                self.command(ev.data)

    def error(self, data: bytes) -> None:
        """An error reply that counts towards the too-many-errors limit (security.md C18)."""
        self.errors += 1
        if self.errors > self.policy.max_errors:
            self.close(wire.reply(421, "4.7.0", f"{self.hostname} Error: too many errors"))
        else:
            self.send(data)

    # ----------------------------------------------------------------- commands

    def command(self, line: bytes) -> None:
        if len(line) > wire.COMMAND_LINE_LIMIT and not line[:5].upper().startswith(b"AUTH "):
            self.error(wire.reply(500, "5.5.2", "Error: Line too long"))
            return
        cmd = wire.parse_command(line)
        handler = getattr(self, "do_" + cmd.verb, None) if cmd.verb else None
        if handler is None:
            self.error(wire.reply(502, "5.5.2", "Error: command not recognized"))
            return
        handler(cmd.arg)

    def reset_transaction(self) -> None:
        self.mail_from, self.rcpts, self.rcpt_keys, self.local_users = None, [], set(), {}
        if self.data is not None:
            self.data.abort()
            self.data = None

    def do_EHLO(self, arg: str, extended: bool = True) -> None:
        name = arg.strip()
        if not name or not name.isprintable() or len(name) > 255 or " " in name:
            self.error(wire.reply(501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} hostname"))
            return
        self.reset_transaction()
        self.helo = name
        if not extended:
            self.send(wire.reply(250, "", self.hostname))
            return
        lines = [self.hostname, "PIPELINING", f"SIZE {self.policy.max_message_size}"]
        mechs = self.factory.auth.mechanisms(self.client_info())  # none before TLS (security.md A4)
        if mechs and self.identity is None:
            lines.append("AUTH " + " ".join(mechs))
        if not self.tls:
            lines.append("STARTTLS")  # RFC 3207
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME"] + (["SMTPUTF8"] if self.policy.smtputf8 else [])
        self.send(wire.multiline(250, lines))

    def do_HELO(self, arg: str) -> None:
        self.do_EHLO(arg, extended=False)

    def do_STARTTLS(self, arg: str) -> None:
        if self.tls:
            self.error(wire.reply(554, "5.5.1", "Error: TLS already active"))
            return
        if arg:
            self.error(wire.reply(501, "5.5.4", "Syntax: STARTTLS"))
            return
        leftover = self.framer.take_buffer()
        self.send(wire.reply(220, "2.0.0", "Ready to start TLS"))
        # RFC 3207 §4.2: forget everything learnt before TLS (NO STARTTLS fixation)
        self.reset_transaction()
        self.helo, self.identity, self.login = None, None, ""
        self.tls = self.handshake_pending = True
        self.transport.startTLS(self.factory.tls.context_factory())
        if leftover.startswith(b"\x16"):  # a ClientHello in the same segment is legal: hand it to TLS
            self.transport.protocol.dataReceived(leftover)
        elif leftover:
            # CVE-2011-0411: plaintext pipelined behind STARTTLS is never executed
            log.warn("starttls_injection rip={peer} bytes={n} action=discard", peer=self.peer_host, n=len(leftover),
                     event="starttls_injection")

    def do_DATA(self, arg: str) -> None:
        if self.mail_from is None:
            self.error(wire.reply(503, "5.5.1", "Error: need MAIL command"))
            return
        if not self.rcpts:
            self.error(wire.reply(554, "5.5.1", "Error: no valid recipients"))
            return
        if arg:
            self.error(wire.reply(501, "5.5.4", "Syntax: DATA"))
            return
        self.busy = True
        d = self.factory.queue.open_spool_async()
        d.addCallbacks(self._spool_opened, self._spool_failed)
        d.addErrback(lambda f: log.failure("smtp DATA", f, event="smtp.internal_error"))

    def _spool_opened(self, spool: Any) -> None:
        if self.closing or self.mail_from is None:
            spool.abort()
            return
        self.data = DataTransaction(self, spool)
        self.busy = False
        self.send(wire.reply(354, "", "End data with <CR><LF>.<CR><LF>"))
        rest = self.framer.take_buffer()
        if rest:
            self._data_bytes(rest)
        self._input_changed()  # input held while the spool opened is now message data

    def _spool_failed(self, failure: Failure) -> None:
        log.error("smtp spool open failed: {err}", err=str(failure.value), event="storage_error")
        self.send(wire.reply(451, "4.3.0", "Error: queue file write error"))
        self.resume()

    def _data_bytes(self, data: bytes) -> None:
        assert self.data is not None
        rest = self.data.feed(data)
        if rest is None or self.closing:
            return
        self.framer.feed(rest)  # pipelined commands after the message wait for its reply
        self.busy = True
        self.data.finish()

    def data_finished(self, reply: bytes) -> None:
        """Called by the DataTransaction with the final reply to the message."""
        self.data = None
        self.mail_from, self.rcpts, self.rcpt_keys, self.local_users = None, [], set(), {}
        result = "accepted" if reply.startswith(b"250") else "rejected"
        metrics.smtp_messages_total.labels(listener=self.factory.name, result=result).inc()
        self.send(reply)
        self.resume()

    def do_RSET(self, arg: str) -> None:
        self.reset_transaction()
        self.send(wire.reply(250, "2.0.0", "Ok"))

    def do_NOOP(self, arg: str) -> None:
        self.send(wire.reply(250, "2.0.0", "Ok"))

    def do_QUIT(self, arg: str) -> None:
        self.close(wire.reply(221, "2.0.0", "Bye"))

    def do_VRFY(self, arg: str) -> None:
        self.send(wire.reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"))

    def do_EXPN(self, arg: str) -> None:
        self.send(wire.reply(502, "5.5.1", "EXPN command is disabled"))

    def do_HELP(self, arg: str) -> None:
        self.send(wire.reply(214, "2.0.0", "See RFC 5321"))
