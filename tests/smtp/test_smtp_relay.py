"""Relay to a capturing smarthost: verified STARTTLS, AUTH, byte-exact dot-stuffing, retries, bounces, restarts."""

from __future__ import annotations

import os
import smtplib
import ssl
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailgw.smtp.client import SmarthostConfig, deliver
from mailgw.smtp.queue import RelayQueue, request_flush
from mailgw.smtp.relay import RelayRunner
from tests.smtp.smtp_support import FileTLS, SinkBehaviour, SinkFactory, SubmissionHarness, make_certs, tmpdir

PW = SubmissionHarness.PASSWORD


def _pad(parts: list[bytes], total: int, target: int) -> int:
    """Append CRLF lines (each under 998 octets) so that the next line starts at `target`."""
    while target - total > 1802:
        parts.append(b"q" * 898 + b"\r\n")
        total += 900
    rem = target - total
    assert rem == 0 or rem >= 4, rem
    if rem:
        a = rem // 2
        parts += [b"p" * (a - 2) + b"\r\n", b"r" * (rem - a - 2) + b"\r\n"]
    return target


def dot_message(size: int, offsets: tuple[int, ...] = (16384, 65536)) -> bytes:
    """A CRLF message of about `size` octets whose lines starting with '.' begin exactly at `offsets`."""
    parts = [b"From: alice@example.test\r\nSubject: dots\r\n\r\n", b".first line\r\n"]
    total = sum(map(len, parts))
    for i, off in enumerate(offsets):
        total = _pad(parts, total, off)
        parts.append(b".\r\n" if i % 2 == 0 else b"..x\r\n")
        total += len(parts[-1])
    line = b"0123456789" * 9 + b"\r\n"
    n = 0
    while total < size:
        n += 1
        parts.append(b"." + line if n % 7 == 0 else line)
        total += len(parts[-1])
    msg = b"".join(parts)
    for off in offsets:
        assert msg[off - 2 : off + 1] == b"\r\n.", off
    return msg


class RelayTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)
        self.sink_certs = make_certs(self.h.dir + "/../" + os.path.basename(self.h.dir) + "-sink" if False else self.sinkdir(), ("smarthost.example.test",))
        self.behaviour = SinkBehaviour(tls=FileTLS(self.sink_certs["cert"], self.sink_certs["key"]).context_factory(),
                                       auth=("relayuser", "relaypw"))
        self.sink = SinkFactory(self.behaviour)
        self.sink_port = reactor.listenTCP(0, self.sink, interface="127.0.0.1")
        self.addCleanup(self.sink_port.stopListening)
        self.cfg = SmarthostConfig("127.0.0.1", self.sink_port.getHost().port, "required", self.sink_certs["ca"],
                                   tls_hostname="smarthost.example.test", username="relayuser", password="relaypw",
                                   helo="mx.example.test")

    def sinkdir(self) -> str:
        d = tmpdir(self)
        return d

    def runner(self, cfg: SmarthostConfig | None = None, **kw: Any) -> RelayRunner:
        kw.setdefault("backoff", (0.05,))
        r = RelayRunner(self.h.queue, reactor, "mx.example.test", self.h.policy.is_local, self.h.factory.local,
                        cfg or self.cfg, poll_interval=0.05, **kw)
        r.start()
        self.addCleanup(r.stop)
        return r

    async def until(self, cond: Any, limit: float = 30.0) -> None:
        waited = 0.0
        while not cond():
            await deferLater(reactor, 0.02, lambda: None)
            waited += 0.02
            if waited > limit:
                self.fail("condition not reached")

    async def test_client_byte_exact(self) -> None:
        """A message with '.' lines at chunk boundaries reaches the sink byte-exact over verified STARTTLS + AUTH."""
        for shift in (-1, 0, 1):
            offsets = tuple(b + shift for b in (16384, 32768, 65536, 131072))
            msg = dot_message(200_000, offsets)
            path = os.path.join(self.h.dir, "m.eml")
            with open(path, "wb") as f:
                f.write(msg)
            result = await deliver(reactor, self.cfg, "alice@example.test", ["x@remote.example"], path, len(msg))
            self.assertEqual(result.delivered(), ["x@remote.example"])
            self.assertEqual(result.tls, "starttls")
            got = self.sink.messages[-1]
            self.assertEqual(got.body, msg)
            self.assertEqual(got.raw.count(b"\r\n.\r\n"), 1)
        self.assertEqual(len(self.sink.messages), 3)
        self.assertTrue(any(c.startswith("MAIL FROM:<alice@example.test> SIZE=") for c in self.sink.commands))

    async def test_wrong_ca_defers_without_password(self) -> None:
        """A smarthost certificate that does not verify: no AUTH is sent and the recipient stays temporary."""
        d = tmpdir(self)
        other = make_certs(d)
        bad = SmarthostConfig(self.cfg.host, self.cfg.port, "required", other["ca"], tls_hostname="smarthost.example.test",
                              username="relayuser", password="relaypw")
        path = os.path.join(self.h.dir, "m.eml")
        with open(path, "wb") as f:
            f.write(b"Subject: x\r\n\r\ny\r\n")
        result = await deliver(reactor, bad, "alice@example.test", ["x@remote.example"], path, 20)
        self.assertEqual(result.temporary(), ["x@remote.example"])
        self.assertFalse(any(c.startswith("AUTH") for c in self.sink.commands))
        self.assertEqual(self.sink.messages, [])

    async def test_required_tls_missing(self) -> None:
        """starttls = required and a smarthost without STARTTLS: deferred; opportunistic: sent in clear."""
        self.behaviour.starttls = False
        self.behaviour.auth = None
        path = os.path.join(self.h.dir, "m.eml")
        with open(path, "wb") as f:
            f.write(b"Subject: x\r\n\r\ny\r\n")
        cfg = SmarthostConfig(self.cfg.host, self.cfg.port, "required", self.cfg.ca_file)
        result = await deliver(reactor, cfg, "a@example.test", ["x@remote.example"], path, 20)
        self.assertEqual(result.temporary(), ["x@remote.example"])
        cfg = SmarthostConfig(self.cfg.host, self.cfg.port, "opportunistic", self.cfg.ca_file)
        result = await deliver(reactor, cfg, "a@example.test", ["x@remote.example"], path, 20)
        self.assertEqual(result.delivered(), ["x@remote.example"])

    async def test_end_to_end_20mb(self) -> None:
        """smtplib submission of a 20 MB message with dot lines is relayed byte-exact, Received header first."""
        msg = dot_message(20 * 1024 * 1024)
        ctx = ssl.create_default_context(cafile=self.h.certs["ca"])

        def submit() -> Any:
            with smtplib.SMTP("127.0.0.1", self.h.plain, timeout=60) as s:
                s.starttls(context=ctx)
                s.login("alice", PW)
                return s.sendmail("alice@example.test", ["far@remote.example"], msg)
        await deferToThread(submit)
        self.runner()
        await self.until(lambda: len(self.sink.messages) == 1 and not self.h.queue.index)
        got = self.sink.messages[0].body
        self.assertTrue(got.startswith(b"Received: from "))
        self.assertEqual(got[got.index(b"From: alice@example.test"):], msg)
        self.assertEqual(self.h.queue.entries(), [])
        # the files go after the envelope is forgotten, in the pool thread
        await self.until(lambda: os.listdir(os.path.join(self.h.queue.directory, "data")) == [])

    async def test_retry_then_deliver(self) -> None:
        """A 4xx at RCPT keeps the recipient queued with a backoff; the next attempt delivers it once."""
        self.behaviour.rcpt_reply["slow@remote.example"] = b"451 4.3.0 try later\r\n"
        await self.h.queue.enqueue("alice@example.test", ["slow@remote.example", "ok@remote.example"],
                                   b"Subject: r\r\n\r\nbody\r\n")
        runner = self.runner(backoff=(3600.0,))
        await self.until(lambda: len(self.sink.messages) == 1)
        await self.until(lambda: not runner.in_flight)
        entry = next(iter(self.h.queue.index.values()))
        self.assertEqual(entry.recipients, ["slow@remote.example"])
        self.assertEqual(entry.attempts, 1)
        self.assertIn("451 4.3.0 try later", entry.last_error)
        self.assertGreater(entry.next_attempt, reactor.seconds() + 3000)
        del self.behaviour.rcpt_reply["slow@remote.example"]
        request_flush(self.h.queue.directory)  # what `mailgwctl queue flush` leaves for the running gateway
        await self.until(lambda: not self.h.queue.index)
        self.assertEqual([m.recipients for m in self.sink.messages], [["ok@remote.example"], ["slow@remote.example"]])

    async def test_bounce_on_5xx(self) -> None:
        """A 5xx sends an RFC 3464 DSN to the (local) sender and removes the message; a bounce is never bounced."""
        self.behaviour.rcpt_reply["gone@remote.example"] = b"550 5.1.1 no such user\r\n"
        await self.h.queue.enqueue("alice@example.test", ["gone@remote.example"], b"Subject: lost\r\n\r\nbody\r\n")
        self.runner()
        await self.until(lambda: len(self.h.inbox("alice")) == 1 and not self.h.queue.index)
        dsn = self.h.inbox("alice")[0].decode()
        self.assertIn("multipart/report; report-type=delivery-status", dsn)
        self.assertIn("Final-Recipient: rfc822; gone@remote.example", dsn)
        self.assertIn("Status: 5.1.1", dsn)
        self.assertIn("Diagnostic-Code: smtp; 550 5.1.1 no such user", dsn)
        self.assertIn("Subject: lost", dsn)
        await self.h.queue.enqueue("", ["gone@remote.example"], b"Subject: dsn\r\n\r\nx\r\n", dsn=True)
        await self.until(lambda: not self.h.queue.index)
        self.assertEqual(len(self.h.inbox("alice")), 1)

    async def test_max_age_bounce(self) -> None:
        """A message older than the maximum queue age is bounced (Status 4.4.7) instead of retried again."""
        self.behaviour.rcpt_reply["slow@remote.example"] = b"451 4.3.0 try later\r\n"
        await self.h.queue.enqueue("alice@example.test", ["slow@remote.example"], b"Subject: old\r\n\r\nbody\r\n")
        self.runner(max_queue_age=0.0)
        await self.until(lambda: len(self.h.inbox("alice")) == 1 and not self.h.queue.index)
        self.assertIn("Status: 4.4.7", self.h.inbox("alice")[0].decode())

    async def test_queue_survives_restart(self) -> None:
        """Committed entries reload after a restart; spool files never committed are removed."""
        qid = await self.h.queue.enqueue("alice@example.test", ["x@remote.example"], b"Subject: k\r\n\r\nb\r\n")
        spool = self.h.queue.open_spool()
        spool.write(b"half a message")
        spool.close()
        os.link(spool.path, os.path.join(self.h.queue.data_dir, "orphan"))
        again = RelayQueue(self.h.queue.directory, reactor, self.h.pool)
        self.assertEqual([e["id"] for e in again.entries()], [qid])
        self.assertEqual(os.listdir(again.tmp_dir), [])
        self.assertEqual(os.listdir(again.data_dir), [qid])
        with open(again.data_path(qid), "rb") as f:
            self.assertEqual(f.read(), b"Subject: k\r\n\r\nb\r\n")

    async def test_batch_one_session(self) -> None:
        """Several due messages share one smarthost session (RSET between them); a refused one is settled alone."""
        self.behaviour.rcpt_reply["gone@remote.example"] = b"550 5.1.1 no such user\r\n"
        for i, rcpt in enumerate(["a@remote.example", "gone@remote.example", "b@remote.example"]):
            await self.h.queue.enqueue("alice@example.test", [rcpt], f"Subject: {i}\r\n\r\nbody\r\n".encode())
        self.runner()
        await self.until(lambda: not self.h.queue.index and len(self.h.inbox("alice")) == 1)
        self.assertEqual([m.recipients for m in self.sink.messages], [["a@remote.example"], ["b@remote.example"]])
        self.assertEqual(sum(1 for c in self.sink.commands if c.startswith("STARTTLS")), 1)
        self.assertEqual(sum(1 for c in self.sink.commands if c == "RSET"), 2)

    async def test_smtputf8_end_to_end(self) -> None:
        """A UTF-8 recipient submitted with SMTPUTF8 is relayed with SMTPUTF8, or bounced 5.6.7 if unsupported."""
        ctx = ssl.create_default_context(cafile=self.h.certs["ca"])
        msg = "From: alice@example.test\r\nTo: jörg@remote.example\r\nSubject: grüße\r\n\r\nhallo\r\n".encode()

        def submit(rcpt: str) -> Any:
            with smtplib.SMTP("127.0.0.1", self.h.plain, timeout=10) as s:
                s.starttls(context=ctx)
                s.login("alice", PW)
                return s.sendmail("alice@example.test", [rcpt], msg, mail_options=["SMTPUTF8"])
        self.behaviour.smtputf8 = True
        await deferToThread(submit, "jörg@remote.example")
        self.runner()
        await self.until(lambda: len(self.sink.messages) == 1 and not self.h.queue.index)
        self.assertEqual(self.sink.messages[0].recipients, ["jörg@remote.example"])
        self.assertIn("MAIL FROM:<alice@example.test> SIZE=", [c for c in self.sink.commands if c.startswith("MAIL")][0])
        self.assertTrue([c for c in self.sink.commands if c.startswith("MAIL")][0].endswith(" SMTPUTF8"))
        self.assertIn(b"with UTF8SMTPSA", self.sink.messages[0].body)
        self.behaviour.smtputf8 = False
        await deferToThread(submit, "jürgen@remote.example")
        await self.until(lambda: len(self.h.inbox("alice")) == 1 and not self.h.queue.index)
        self.assertIn("Status: 5.6.7", self.h.inbox("alice")[0].decode())
        self.assertEqual(len(self.sink.messages), 1)

    async def test_silent_smarthost_times_out(self) -> None:
        """A smarthost that never greets hits the greeting timeout: the recipient stays temporary."""
        from twisted.internet.protocol import Factory, Protocol

        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        timeouts = dict(self.cfg.timeouts, greeting=0.2)
        cfg = SmarthostConfig("127.0.0.1", silent.getHost().port, "off", timeouts=timeouts)
        path = os.path.join(self.h.dir, "m.eml")
        with open(path, "wb") as f:
            f.write(b"Subject: x\r\n\r\ny\r\n")
        result = await deliver(reactor, cfg, "a@example.test", ["x@remote.example"], path, 20)
        self.assertEqual(result.temporary(), ["x@remote.example"])
        self.assertIn("timeout waiting for greeting", result.replies["x@remote.example"][1])
