"""What submission tells the operator: TLS handshake counters, listener labels, reject lines, one queue id, ISO retry times."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import smtplib
import socket
import ssl
from typing import Any, Callable

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.cli.main import main
from mailgw.observe.metrics import REGISTRY
from mailgw.smtp.queue import iso8601
from mailgw.smtp.relay import RelayRunner
from tests.smtp.smtp_support import RawSMTP, SinkBehaviour, SinkFactory, SubmissionHarness, tmpdir

PW = SubmissionHarness.PASSWORD
LISTENER = "submission.relay"


def handshakes(result: str) -> float:
    """Sum of mailgw_tls_handshakes_total for the harness listener and `result`, over every TLS version."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if (sample.name == "mailgw_tls_handshakes_total" and sample.labels.get("listener") == LISTENER
                    and sample.labels.get("result") == result):
                total += sample.value
    return total


async def until(predicate: Callable[[], bool], turns: int = 20000) -> None:
    """Wait, one reactor turn at a time, until `predicate()` holds."""
    for _ in range(turns):
        if predicate():
            return
        await task.deferLater(reactor, 0, lambda: None)
    raise AssertionError("condition never became true")


class SubmissionObservabilityTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, event: str) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("event") == event]

    async def test_tls_handshakes_counted(self) -> None:
        """STARTTLS and implicit-TLS handshakes count as ok under listener submission.relay; a client that drops mid-handshake counts as failed."""
        ok, failed = handshakes("ok"), handshakes("failed")

        def run() -> None:
            c = RawSMTP(self.h.plain)
            c.cmd("EHLO c.example")
            c.starttls()
            c.cmd("QUIT")
            c.close()
            RawSMTP(self.h.implicit, implicit=True).close()
            with socket.create_connection(("127.0.0.1", self.h.implicit), timeout=10) as s:
                s.sendall(b"\x16\x03\x01\x00\x05hello")  # a truncated ClientHello, then FIN
        await deferToThread(run)
        await until(lambda: handshakes("failed") == failed + 1 and not self.h.factory.sessions
                    and not self.h.implicit_factory.sessions)
        self.assertEqual(handshakes("ok"), ok + 2)
        sample = REGISTRY.get_sample_value("mailgw_connections_total", {"listener": LISTENER, "protocol": "smtp"})
        self.assertGreaterEqual(sample or 0, 3)
        self.assertTrue(all("on submission.relay" in line for line in self.lines("smtp.connect")), self.lines("smtp.connect"))

    async def test_reject_lines(self) -> None:
        """An unauthenticated MAIL logs from= with the bare address; an unknown local recipient logs its 550 5.1.1 with to=."""
        def run() -> tuple[tuple[int, str], tuple[int, str]]:
            c = RawSMTP(self.h.plain)
            c.cmd("EHLO c.example")
            c.starttls()
            c.cmd("EHLO c.example")
            refused = c.cmd("MAIL FROM:<mallory@example.test> SIZE=10")
            c.login()
            c.cmd("MAIL FROM:<alice@example.test>")
            unknown = c.cmd("RCPT TO:<nobody@example.test>")
            c.close()
            return refused, unknown
        refused, unknown = await deferToThread(run)
        self.assertEqual(refused[0], 530)
        self.assertTrue(unknown[1].startswith("550 5.1.1 <nobody@example.test>"), unknown)
        rejects = self.lines("smtp.reject")
        self.assertIn("reject=relay rip=127.0.0.1 from=mallory@example.test", rejects)
        self.assertIn("reject=unknown_recipient rip=127.0.0.1 user=alice to=nobody@example.test", rejects)

    async def test_one_queue_id_everywhere(self) -> None:
        """The Received id of a relayed message is the id of the 250, of the smtp.accepted and queue lines, and of `mailgwctl queue list`."""
        ctx = ssl.create_default_context(cafile=self.h.certs["ca"])

        def submit() -> str:
            with smtplib.SMTP("127.0.0.1", self.h.plain, timeout=10) as s:
                s.starttls(context=ctx)
                s.login("alice", PW)
                s.mail("alice@example.test")
                s.rcpt("far@remote.example")
                code, reply = s.data(b"Subject: ids\r\n\r\nbody\r\n")
                self.assertEqual(code, 250)
                return reply.decode()
        reply = await deferToThread(submit)
        queue_id = re.fullmatch(r"2\.0\.0 Ok: queued as (\S+)", reply).group(1)  # type: ignore[union-attr]
        with open(self.h.queue.data_path(queue_id), "rb") as handle:
            received = handle.read().split(b"\r\n\r\n", 1)[0].decode()
        self.assertRegex(received, rf"with ESMTPSA id {queue_id}\r\n")
        self.assertTrue(any(queue_id in line for line in self.lines("smtp.accepted")))
        self.assertTrue(any(line.startswith(f"queued {queue_id} ") for line in self.lines("queue.enqueued")))
        state = tmpdir(self)  # a state directory whose queue/relay is the harness queue
        os.makedirs(os.path.join(state, "queue"))
        os.symlink(self.h.queue.directory, os.path.join(state, "queue", "relay"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["queue", "--state-dir", state, "list", "-f", "json"]), 0)
        self.assertEqual([row["id"] for row in json.loads(out.getvalue())], [queue_id])

    async def test_retry_time_iso8601(self) -> None:
        """A deferred delivery logs its next attempt as an ISO 8601 UTC time, and `queue list` shows the same."""
        sink = SinkFactory(SinkBehaviour())
        sink.behaviour.rcpt_reply["slow@remote.example"] = b"451 4.3.0 try later\r\n"
        port = reactor.listenTCP(0, sink, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        from mailgw.smtp.client import SmarthostConfig

        smarthost = SmarthostConfig(host="127.0.0.1", port=port.getHost().port, starttls="off")
        runner = RelayRunner(self.h.queue, reactor, "mx.example.test", lambda a: False, None, smarthost,
                             backoff=(3600.0,), poll_interval=0.05)
        queue_id = await self.h.queue.enqueue("alice@example.test", ["slow@remote.example"], b"Subject: r\r\n\r\nb\r\n")
        runner.start()
        self.addCleanup(runner.stop)
        await until(lambda: bool(self.lines("relay.deferred")))
        # The line is logged before the envelope is rewritten on disk (in the pool): `queue list` reads the file.
        await until(lambda: not runner.in_flight)
        entry = self.h.queue.index[queue_id]
        line = self.lines("relay.deferred")[0]
        self.assertIn(f"until {iso8601(entry.next_attempt)}: ", line)
        self.assertRegex(line, r"until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: ")
        self.assertEqual(self.h.queue.entries()[0]["next_attempt_at"], iso8601(entry.next_attempt))
        state = tmpdir(self)
        os.makedirs(os.path.join(state, "queue"))
        os.symlink(self.h.queue.directory, os.path.join(state, "queue", "relay"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["queue", "--state-dir", state, "list"]), 0)
        self.assertIn(f"next attempt: {iso8601(entry.next_attempt)}", out.getvalue())


class IsoTimeTests(SynchronousTestCase):
    def test_iso8601(self) -> None:
        """iso8601 renders a Unix time as UTC with a Z suffix and whole seconds."""
        self.assertEqual(iso8601(0), "1970-01-01T00:00:00Z")
        self.assertEqual(iso8601(1796686923.9), "2026-12-07T23:42:03Z")


class StoreDeliveryMetricTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    def deliveries(self, result: str) -> float:
        return REGISTRY.get_sample_value("mailgw_store_deliveries_total", {"store": "memory", "result": result}) or 0.0

    async def test_deliveries_counted(self) -> None:
        """Each local delivery of a submitted message counts once as ok; a mailbox over quota counts as quota (and is queued)."""
        ok, quota = self.deliveries("ok"), self.deliveries("quota")
        ctx = ssl.create_default_context(cafile=self.h.certs["ca"])

        def submit() -> None:
            with smtplib.SMTP("127.0.0.1", self.h.plain, timeout=10) as s:
                s.starttls(context=ctx)
                s.login("alice", PW)
                s.sendmail("alice@example.test", ["bob@example.test", "alice@example.test"], b"Subject: x\r\n\r\ny\r\n")
        await deferToThread(submit)
        self.assertEqual(self.deliveries("ok"), ok + 2)
        self.h.store.quota_messages = 1  # bob and alice each hold one message now
        await deferToThread(submit)
        self.assertEqual(self.deliveries("quota"), quota + 2)
