"""One DATA transaction: stream to a spool file, enforce size/line/From policy, deliver locally or queue.

The message is never buffered whole on the reactor: the DataDecoder writes unstuffed chunks
to the spool as they arrive. Only after every local delivery and the queue commit are
durable does the client get its 250 (RFC 5321 §6.1).
"""

from __future__ import annotations

import email.utils
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet import defer
from twisted.logger import Logger

from mailgw.errors import StorageUnavailable
from mailgw.interfaces import MessageFile
from mailgw.smtp import wire
from mailgw.smtp.headers import FromTooLong, HeaderCollector, header_from_addresses
from mailgw.smtp.queue import Spool

if TYPE_CHECKING:
    from mailgw.smtp.server import SubmissionSession

log = Logger()


def _clean(text: str) -> str:
    """Header-safe rendering of client-supplied text (HELO name, login)."""
    return "".join(ch if ch.isprintable() and ch not in "()\\" else "?" for ch in text)[:200]


def received_header(session: "SubmissionSession", queue_id: str) -> bytes:
    """RFC 5321 §4.4 trace field with the TLS version and cipher and the authenticated user (RFC 3848)."""
    version, cipher = session.tls_details()
    date = email.utils.formatdate(session.factory.reactor.seconds(), localtime=False)
    utf8 = session.mail_from is not None and "SMTPUTF8" in session.mail_from.params
    proto = "UTF8SMTPSA" if utf8 else "ESMTPSA"  # RFC 3848, RFC 6531 §3.7.3
    text = (
        f"Received: from {_clean(session.helo or 'unknown')} ([{session.peer_host}])\r\n"
        f"\tby {session.hostname} (mailgw) with {proto} id {queue_id}\r\n"
        f"\t(using {version or 'TLS'} with cipher {cipher or 'unknown'})\r\n"
        f"\t(authenticated user {_clean(session.login)});\r\n"
        f"\t{date}\r\n"
    )
    return text.encode("utf-8")


class DataTransaction:
    """The message between 354 and its final reply."""

    def __init__(self, session: "SubmissionSession", spool: Spool) -> None:
        self.session = session
        self.policy = session.policy
        self.spool = spool
        self.trace_id = spool.id  # = the queue id of the commit below (one id per message everywhere)
        self.spool.write(received_header(session, self.trace_id))
        self.decoder = wire.DataDecoder(self._sink, wire.TEXT_LINE_LIMIT)
        self.receiving = True
        self.oversize = False
        self.header_oversize = False
        self._header = HeaderCollector(self.policy.max_header_bytes)
        self._aborted = False

    def _sink(self, chunk: bytes) -> None:
        if self.oversize or self.header_oversize:
            return
        if self.decoder.size > self.policy.max_message_size:
            self.oversize = True  # read and discard to CRLF.CRLF (security.md C17)
            self.spool.abort()
            return
        if not self._header.done and not self._header.feed(chunk):
            # issue 12: a header past the limit is refused whole, never checked in part (a From:
            # after 256 KiB of junk fields once escaped send_as); read on to CRLF.CRLF, keep nothing
            self.header_oversize = True
            self.spool.abort()
            return
        self.spool.write(chunk)

    def feed(self, data: bytes) -> Optional[bytes]:
        rest = self.decoder.feed(data)
        if self.decoder.bare_newline:
            self._drop()
            s = self.session
            log.warn("reject=bare_lf rip={peer} user={user}", peer=s.peer_host, user=s.login, event="smtp.reject",
                     reject="bare_lf")
            s.close(wire.reply(550, "5.5.2", f"{s.hostname} Error: bare <LF> received"))
            return None
        if rest is not None:
            self.receiving = False
        return rest

    def abort(self) -> None:
        """The session ended or was reset: drop a message still being received (not one being delivered)."""
        if self.receiving:
            self._drop()

    def _drop(self) -> None:
        if not self._aborted:
            self._aborted = True
            self.spool.abort()

    def finish(self) -> None:
        defer.ensureDeferred(self._finish()).addCallbacks(self.session.data_finished, self._crashed)

    def _crashed(self, failure: Any) -> None:
        if not failure.check(StorageUnavailable):
            log.failure("smtp delivery failed", failure, event="storage_error")
        self._drop()
        self.session.data_finished(wire.reply(451, "4.3.0", "Error: queue file write error"))

    def _reject(self, reply: bytes, reason: str) -> bytes:
        s = self.session
        log.info("reject={reason} rip={peer} user={user}", reason=reason, peer=s.peer_host, user=s.login,
                 event="smtp.reject")
        self._drop()
        return reply

    async def _finish(self) -> bytes:
        s = self.session
        if self.oversize:
            return self._reject(wire.reply(552, "5.3.4", "Message size exceeds fixed limit"), "size")
        if self.header_oversize:
            return self._reject(wire.reply(552, "5.3.4", "Message header size exceeds limit"), "header_size")
        if self.decoder.long_line and self.policy.long_lines == "reject":
            return self._reject(wire.reply(552, "5.3.4", "Message line too long"), "long_line")
        assert s.identity is not None and s.mail_from is not None
        if self.policy.send_as == "own":
            try:
                senders = header_from_addresses(self._header.block())
            except FromTooLong:
                return self._reject(wire.reply(553, "5.7.1", "Sender address rejected: From: header too long"),
                                    "from_too_long")
            for addr in senders or ():
                if not self.policy.may_send_as(s.identity, addr):
                    return self._reject(wire.reply(553, "5.7.1", f"<{addr}>: Sender address rejected: "
                                                   f"not owned by user {s.login}"), "sender_mismatch")
        sender = s.mail_from.address
        local_users = dict(s.local_users)
        queue_rcpts = [r for r in s.rcpts if r not in local_users]
        self.spool.close()
        if local_users:
            # The store copies the spool file in its pool, in chunks: the message is never held whole.
            data = MessageFile(path=self.spool.path, size=self.spool.size)
            by_user: dict[str, list[str]] = {}
            for addr, user in local_users.items():
                by_user.setdefault(user, []).append(addr)
            users = list(by_user)
            results = await defer.DeferredList([s.factory.local.deliver(u, data) for u in users], consumeErrors=True)
            for user, (ok, value) in zip(users, results):
                if not ok:  # the queue runner retries (or bounces) the local delivery
                    log.warn("local delivery to {user} deferred: {err}", user=user, err=str(getattr(value, "value", value)),
                             event="smtp.local_deferred")
                    queue_rcpts += by_user[user]
        if queue_rcpts:
            params = s.mail_from.params
            queue_id = await s.factory.queue.commit(
                self.spool, sender, queue_rcpts, user=s.login, smtputf8="SMTPUTF8" in params,
                eight_bit=(params.get("BODY") or "").upper() == "8BITMIME")
        else:
            self._drop()
            queue_id = self.trace_id
        self._aborted = True
        log.info("smtp accepted {id} user={user} from={sender} rcpts={n} size={size}", id=queue_id, user=s.login,
                 sender=sender, n=len(s.rcpts), size=self.decoder.size, event="smtp.accepted")
        return wire.reply(250, "2.0.0", f"Ok: queued as {queue_id}")
