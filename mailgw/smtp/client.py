"""Outbound ESMTP client: one message to one smarthost, with STARTTLS, AUTH and whole-stream dot-stuffing.

Replaces Twisted's ESMTPSender (notes/twisted.md): stuffing is stateful across chunks (T5),
bytes that follow the STARTTLS 220 are dropped, every wait has the RFC 5321 §4.5.3.2 timeout,
and the outcome is reported per recipient from the protocol itself (endpoints never call
clientConnectionFailed). A message is never re-sent on the same attempt after DATA.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust, trustRootFromCertificates
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from mailgw.net.closing import close_transport
from mailgw.smtp.wire import DotStuffer

log = Logger()

# RFC 5321 §4.5.3.2 minimum timeouts, in seconds
TIMEOUTS = {"greeting": 300.0, "ehlo": 300.0, "mail": 300.0, "rcpt": 300.0, "data": 120.0, "block": 180.0,
            "end": 600.0, "starttls": 120.0, "auth": 120.0, "quit": 30.0}
_REPLY_LIMIT = 64 * 1024  # one reply, all its lines together (RFC 5321 §4.5.3.1.5: a line is 512)
_TEXT_KEPT = 1000  # characters of a reply kept per recipient (queue last_error, DSN Diagnostic-Code)


@dataclass(frozen=True)
class SmarthostConfig:
    """Where and how to relay. `starttls`: required | opportunistic | implicit (465) | off (tests only)."""

    host: str
    port: int = 25
    starttls: str = "required"
    ca_file: Optional[str] = None
    tls_hostname: Optional[str] = None  # name to verify, when `host` is an address
    username: Optional[str] = None
    password: Optional[str] = None
    helo: str = "localhost"
    connect_timeout: float = 30.0
    timeouts: dict[str, float] = field(default_factory=lambda: dict(TIMEOUTS))


@dataclass
class DeliveryResult:
    """Outcome of one attempt: (code, text) per recipient; 2xx = delivered."""

    replies: dict[str, tuple[int, str]]
    tls: str = ""

    def delivered(self) -> list[str]:
        return [r for r, (c, _) in self.replies.items() if 200 <= c < 300]

    def temporary(self) -> list[str]:
        return [r for r, (c, _) in self.replies.items() if 400 <= c < 500 or c == 0]

    def permanent(self) -> list[str]:
        return [r for r, (c, _) in self.replies.items() if c >= 500]


class SMTPReplyError(Exception):
    """The server answered with an unexpected code at some stage."""

    def __init__(self, stage: str, code: int, text: str) -> None:
        super().__init__(f"{stage}: {code} {text}")
        self.stage, self.code, self.text = stage, code, text


def tls_options(cfg: SmarthostConfig) -> Any:
    """Verified client TLS options (service_identity), trusting `ca_file` or the platform store."""
    name = cfg.tls_hostname or cfg.host
    if cfg.ca_file:
        with open(cfg.ca_file, "rb") as f:
            pem = f.read()
        marker = b"-----END CERTIFICATE-----"
        certs = [Certificate.loadPEM(part + marker) for part in pem.split(marker) if b"BEGIN CERTIFICATE" in part]
        trust = trustRootFromCertificates(certs)
    else:
        trust = platformTrust()
    return optionsForClientTLS(name, trustRoot=trust)


@dataclass
class Job:
    """One message of a session: its envelope, its file, and the replies collected for it."""

    sender: str
    recipients: list[str]
    data_path: str
    size: int
    eight_bit: bool = False
    smtputf8: bool = False
    result: dict[str, tuple[int, str]] = field(default_factory=dict)
    final: set[str] = field(default_factory=set)  # recipients whose outcome this attempt is settled

    def settle(self, rcpt: str, code: int, lines: list[str]) -> None:
        self.result[rcpt] = (code, (f"{code} " + " ".join(lines))[:_TEXT_KEPT])
        self.final.add(rcpt)


class ESMTPClient(Protocol):
    """Sends one or more messages over one session; `done` fires with a DeliveryResult per job (never errbacks)."""

    transport: Any

    def __init__(self, cfg: SmarthostConfig, jobs: list[Job], reactor: Any) -> None:
        self.cfg, self.jobs, self.reactor = cfg, jobs, reactor
        self.done: defer.Deferred[list[DeliveryResult]] = defer.Deferred()
        self._buf = bytearray()
        self._lines: list[str] = []
        self._reply_bytes = 0  # octets of the reply being read (all its lines so far)
        self._closed = False
        self._waiting: Optional[defer.Deferred[tuple[int, list[str]]]] = None
        self._timer: Any = None
        self._lost: Optional[Failure] = None
        self._tls = ""

    # ----------------------------------------------------------------- transport events

    def connectionMade(self) -> None:
        defer.ensureDeferred(self._run()).addBoth(self._finish)

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._buf += data
        while (nl := self._buf.find(b"\n")) >= 0:
            raw = bytes(self._buf[:nl]).rstrip(b"\r")
            del self._buf[: nl + 1]  # bytearray: consumed from the front in O(1)
            # one reply, however many lines, is bounded: a smarthost sending `250-` forever is cut off
            self._reply_bytes += len(raw) + 2
            if self._reply_bytes > _REPLY_LIMIT:
                self._protocol_error("reply too long")
                return
            text = raw.decode("utf-8", "replace")
            self._lines.append(text)
            if len(text) < 3 or not text[:3].isdigit():
                self._protocol_error("malformed reply")
                return
            if len(text) == 3 or text[3] != "-":
                lines, self._lines, self._reply_bytes = self._lines, [], 0
                code = int(text[:3])
                w, self._waiting = self._waiting, None
                if w is None:
                    continue  # unsolicited reply: ignored
                self._cancel_timer()
                w.callback((code, [ln[4:] for ln in lines]))
                if self._closed:
                    return
        if len(self._buf) + self._reply_bytes > _REPLY_LIMIT:
            self._protocol_error("reply too long")

    def _protocol_error(self, text: str) -> None:
        self._closed = True
        self._buf, self._lines = bytearray(), []
        self._fail_wait(Failure(SMTPReplyError("reply", 0, text)))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = reason
        self._fail_wait(reason)

    # ----------------------------------------------------------------- helpers


    def _fail_wait(self, reason: Failure) -> None:
        w, self._waiting = self._waiting, None
        self._cancel_timer()
        if w is not None:
            w.errback(reason)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expect(self, stage: str) -> "defer.Deferred[tuple[int, list[str]]]":
        if self._lost is not None:
            return defer.fail(self._lost)
        d: defer.Deferred[tuple[int, list[str]]] = defer.Deferred()
        self._waiting = d

        def expired() -> None:
            self._timer = None
            self._fail_wait(Failure(SMTPReplyError(stage, 0, f"timeout waiting for {stage} reply")))
            self.transport.abortConnection()

        self._timer = self.reactor.callLater(self.cfg.timeouts.get(stage, 300.0), expired)
        return d

    async def _command(self, line: str, stage: str) -> tuple[int, list[str]]:
        self.transport.write(line.encode("utf-8") + b"\r\n")
        return await self._expect(stage)

    async def _ehlo(self) -> dict[str, str]:
        code, lines = await self._command(f"EHLO {self.cfg.helo}", "ehlo")
        if code != 250:
            raise SMTPReplyError("ehlo", code, " ".join(lines))
        ext: dict[str, str] = {}
        for ln in lines[1:]:
            key, _, val = ln.partition(" ")
            ext[key.upper()] = val
        return ext

    # ----------------------------------------------------------------- the session

    async def _run(self) -> None:
        code, lines = await self._expect("greeting")
        if code != 220:
            raise SMTPReplyError("greeting", code, " ".join(lines))
        ext = await self._ehlo()
        if self.cfg.starttls in ("required", "opportunistic") and not self._tls:
            if "STARTTLS" in ext:
                code, lines = await self._command("STARTTLS", "starttls")
                if code == 220:
                    self._buf, self._lines = bytearray(), []  # never act on bytes sent before the handshake
                    self._reply_bytes = 0
                    self.transport.startTLS(tls_options(self.cfg))
                    self._tls = "starttls"
                    ext = await self._ehlo()
                elif self.cfg.starttls == "required":
                    raise SMTPReplyError("starttls", code if code >= 400 else 454, " ".join(lines))
            elif self.cfg.starttls == "required":
                raise SMTPReplyError("starttls", 454, "smarthost does not offer STARTTLS")
        if self.cfg.username is not None:
            if not self._tls:
                # issue 12 (STRIPTLS): a smarthost whose EHLO lacks STARTTLS, with starttls =
                # "opportunistic" or "off", would get the password in clear. Never: the mail waits.
                log.warn("smarthost_auth_refused host={host} port={port}: no TLS on the connection, credentials "
                         "not sent; mail stays queued", host=self.cfg.host, port=self.cfg.port,
                         event="relay.auth_without_tls")
                raise SMTPReplyError("auth", 454, "4.7.0 credentials are never sent without TLS "
                                                  "(smarthost offered no STARTTLS)")
            await self._auth(ext)
        for i, job in enumerate(self.jobs):
            if i:
                code, lines = await self._command("RSET", "mail")
                if code != 250:
                    raise SMTPReplyError("rset", code, " ".join(lines))
            await self._transaction(job, ext)
        await self._quit()

    async def _transaction(self, job: Job, ext: dict[str, str]) -> None:
        params = ""
        if "SIZE" in ext:
            params += f" SIZE={job.size}"
        if job.eight_bit and "8BITMIME" in ext:
            params += " BODY=8BITMIME"
        if job.smtputf8:
            if "SMTPUTF8" in ext:
                params += " SMTPUTF8"
            elif not all(a.isascii() for a in [job.sender, *job.recipients]):
                for r in job.recipients:  # RFC 6531 §3.2: cannot be relayed without the extension
                    job.settle(r, 553, ["5.6.7 smarthost does not support SMTPUTF8"])
                return
        code, lines = await self._command(f"MAIL FROM:<{job.sender}>{params}", "mail")
        if code != 250:
            for r in job.recipients:
                job.settle(r, code, lines)
            return
        accepted = []
        for r in job.recipients:
            code, lines = await self._command(f"RCPT TO:<{r}>", "rcpt")
            if code in (250, 251):
                accepted.append(r)
            else:
                job.settle(r, code, lines)
        if not accepted:
            return
        code, lines = await self._command("DATA", "data")
        if code != 354:
            for r in accepted:
                job.settle(r, code, lines)
            return
        await self._send_body(job)
        code, lines = await self._expect("end")
        for r in accepted:
            job.settle(r, code, lines)

    async def _auth(self, ext: dict[str, str]) -> None:
        mechs = ext.get("AUTH", "").upper().split()
        user, pw = self.cfg.username or "", self.cfg.password or ""
        if "PLAIN" in mechs:
            ir = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
            code, lines = await self._command(f"AUTH PLAIN {ir}", "auth")
        elif "LOGIN" in mechs:
            code, lines = await self._command("AUTH LOGIN", "auth")
            if code == 334:
                code, lines = await self._command(base64.b64encode(user.encode()).decode(), "auth")
            if code == 334:
                code, lines = await self._command(base64.b64encode(pw.encode()).decode(), "auth")
        else:
            raise SMTPReplyError("auth", 454, "smarthost offers no usable AUTH mechanism")
        if code != 235:
            raise SMTPReplyError("auth", code, " ".join(lines))

    async def _send_body(self, job: Job) -> None:
        stuffer = DotStuffer()
        with open(job.data_path, "rb") as f:
            sender = FileSender()
            sender.CHUNK_SIZE = 64 * 1024
            d = sender.beginFileTransfer(f, self.transport, transform=stuffer.stuff)
            timer = self.reactor.callLater(self.cfg.timeouts["block"] + job.size / 1000.0,
                                           self.transport.abortConnection)
            try:
                await d
            finally:
                if timer.active():
                    timer.cancel()
        if self._lost is not None:
            self._lost.raiseException()
        self.transport.write(stuffer.finish())

    async def _quit(self) -> None:
        try:
            await self._command("QUIT", "quit")
        except Exception:
            pass
        close_transport(self.transport)  # over TLS: no wait for the smarthost's close_notify (issue 18)

    def _finish(self, outcome: Any) -> None:
        if isinstance(outcome, Failure):
            # Any failure is temporary for every recipient without a final reply: a smarthost
            # misconfiguration (AUTH 535, TLS verify) must defer mail, not bounce it.
            err = outcome.value
            text = (str(err) if isinstance(err, SMTPReplyError) else f"{type(err).__name__}: {err}")[:_TEXT_KEPT]
            for job in self.jobs:
                for r in job.recipients:
                    if r not in job.final:
                        job.result[r] = (0, text)
            if self.transport is not None:
                self.transport.abortConnection()
        self.done.callback([DeliveryResult(dict(job.result), self._tls) for job in self.jobs])


def deliver_batch(reactor: Any, cfg: SmarthostConfig, jobs: list[Job]) -> "defer.Deferred[list[DeliveryResult]]":
    """Connect to the smarthost once and try to send each job in turn; never errbacks."""
    endpoint: Any = HostnameEndpoint(reactor, cfg.host, cfg.port, timeout=cfg.connect_timeout)
    if cfg.starttls == "implicit":
        endpoint = wrapClientTLS(tls_options(cfg), endpoint)
    proto = ESMTPClient(cfg, jobs, reactor)
    if cfg.starttls == "implicit":
        proto._tls = "implicit"

    def failed(f: Failure) -> list[DeliveryResult]:
        return [DeliveryResult({r: (0, f"connect: {f.getErrorMessage()}") for r in job.recipients}) for job in jobs]

    d = connectProtocol(endpoint, proto)
    d.addCallbacks(lambda _: proto.done, failed)
    return d


def deliver(reactor: Any, cfg: SmarthostConfig, sender: str, recipients: list[str], data_path: str, size: int,
            eight_bit: bool = False) -> "defer.Deferred[DeliveryResult]":
    """One message in its own session; never errbacks."""
    d = deliver_batch(reactor, cfg, [Job(sender, list(recipients), data_path, size, eight_bit)])
    return d.addCallback(lambda results: results[0])
