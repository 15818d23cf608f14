"""Offline bounds: reply backpressure on a StringTransport, header collection and From: parsing, smarthost replies."""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService
from mailgw.smtp.client import ESMTPClient, Job, SmarthostConfig, deliver
from mailgw.smtp.dsn import build_dsn
from mailgw.smtp.factory import SubmissionFactory
from mailgw.smtp.headers import MAX_FROM_BYTES, FromTooLong, HeaderCollector, from_addresses, header_from_addresses
from mailgw.smtp.policy import SubmissionPolicy
from mailgw.smtp.server import MAX_PIPELINED_INPUT
from mailgw.store.memory import MemoryStore
from tests.smtp.smtp_support import tmpdir


def session(clock: Clock) -> tuple[Any, StringTransport]:
    directory = MemoryDirectory()
    auth = AuthService([directory], clock, failure_delay=0)
    factory = SubmissionFactory("bounds", auth, MemoryStore(), None, None, "mx.example.test",  # type: ignore[arg-type]
                                SubmissionPolicy(local_domains=frozenset({"example.test"})), clock, None)  # type: ignore[arg-type]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


class BackpressureTests(SynchronousTestCase):
    def test_paused_transport_stops_commands_and_reading(self) -> None:
        """While the transport's write buffer is full no command runs; past the input mark reading stops; both resume."""
        clock = Clock()
        proto, transport = session(clock)
        self.assertIs(transport.producer, proto.flow)  # registered as the transport's streaming producer
        self.assertTrue(transport.streaming)
        greeting = transport.value()
        proto.flow.pauseProducing()  # what the transport does past its high mark
        fed = 0
        while transport.producerState != "paused" and fed < 100_000:
            proto.dataReceived(b"NOOP\r\n" * 1000)
            fed += 1000
        self.assertEqual(transport.value(), greeting)  # no reply while the client does not read
        self.assertEqual(transport.producerState, "paused")  # and no more input is read
        self.assertLessEqual(proto.framer.buffered, MAX_PIPELINED_INPUT + 6000)
        proto.flow.resumeProducing()  # the transport drained its buffer
        clock.advance(0)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value().count(b"250 2.0.0 Ok\r\n"), fed)  # none lost, none run twice

    def test_close_unregisters_and_aborts_a_non_reader(self) -> None:
        """QUIT unregisters the producer (TLS closes only then) and a peer that never reads is aborted after 10 s."""
        clock = Clock()
        proto, transport = session(clock)
        aborted: list[bool] = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        proto.dataReceived(b"QUIT\r\n")
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.value().endswith(b"221 2.0.0 Bye\r\n"))
        clock.advance(9.9)
        self.assertEqual(aborted, [])
        clock.advance(0.2)
        self.assertEqual(aborted, [True])


class HeaderCollectorTests(SynchronousTestCase):
    def test_limit_exact(self) -> None:
        """A header of exactly the limit passes and one octet more fails, however it is chunked."""
        field = b"X: " + b"y" * 95 + b"\r\n"  # 100 octets
        for size, ok in ((1000, True), (1001, False)):
            header = field * (size // 100) + b"Z:" * (size % 100 // 2) + (b"\r\n" if size % 100 else b"")
            header = header[: size - 2] + b"\r\n" if len(header) != size else header
            self.assertEqual(len(header), size)
            message = header + b"\r\nbody\r\n" + b"b" * 5000
            for step in (1, 7, 100, len(message)):
                c = HeaderCollector(1000)
                results = [c.feed(message[i : i + step]) for i in range(0, len(message), step) if not c.done]
                self.assertEqual(all(results), ok, (size, step))
                if ok:
                    self.assertEqual(c.block(), header + b"\r\n")

    def test_one_line_per_chunk_is_linear(self) -> None:
        """256 KiB of header fed one short line at a time is collected in well under a second."""
        c = HeaderCollector(256 * 1024)
        line = b"X-J: 1234\r\n"
        start = time.monotonic()
        while not c.done:
            c.feed(line)
        self.assertLess(time.monotonic() - start, 1.0)

    def test_empty_header(self) -> None:
        """A message that starts with its blank line has no header fields."""
        c = HeaderCollector(10)
        self.assertTrue(c.feed(b"\r\nbody\r\n"))
        self.assertEqual(header_from_addresses(c.block()), None)


class FromAddressTests(SynchronousTestCase):
    def test_table(self) -> None:
        """Every address a reader could take for the sender is returned; display names are not addresses."""
        cases = {
            "Alice <alice@example.test>": ["alice@example.test"],
            '"ceo@bank.example" <alice@example.test>': ["alice@example.test"],
            "alice@example.test <ceo@bank.example>": ["ceo@bank.example", "alice@example.test"],
            "team: a@x.test, b@y.test;": ["a@x.test", "b@y.test"],
            "<@relay.example:ceo@bank.example>": ["ceo@bank.example"],
            '"ceo"@bank.example': ["ceo@bank.example"],
            "ceo (alice@example.test) @ bank.example": ["ceo@bank.example"],
            "<ceo@bank.example": ["ceo@bank.example"],
            "ceo": ["ceo"],
            "A <A@X.test>, B <b@y.test>": ["a@x.test", "b@y.test"],
        }
        for value, expected in cases.items():
            self.assertEqual(from_addresses(value), expected, value)

    def test_hostile_values_terminate(self) -> None:
        """Nesting that made email.utils raise RecursionError, and every other shape, is parsed fast without error."""
        n = MAX_FROM_BYTES // 2 - 10
        for value in ["(" * n, "a:" * n, "<" * n, '"' * n, "\\" * n, "@" * n, "g:a@b;" * (n // 3), "(a)" * (n // 2)]:
            start = time.monotonic()
            header_from_addresses(b"From: " + value.encode() + b"\r\n\r\n")
            self.assertLess(time.monotonic() - start, 0.2, value[:10])

    def test_too_long(self) -> None:
        """From: fields past 16 KiB are refused as a whole, folded or repeated."""
        with self.assertRaises(FromTooLong):
            header_from_addresses(b"From: a@b.test\r\n" + b" x\r\n" * MAX_FROM_BYTES + b"\r\n")
        with self.assertRaises(FromTooLong):
            header_from_addresses(b"From: a@b.test\r\n" * (MAX_FROM_BYTES // 8) + b"\r\n")


class SmarthostReplyTests(TestCase):
    timeout = 30

    def test_endless_multiline_reply_offline(self) -> None:
        """A smarthost sending `220-` lines forever is cut off after 64 KiB: aborted, every recipient temporary."""
        clock = Clock()
        job = Job("a@example.test", ["x@remote.example"], "/nonexistent", 1)
        client = ESMTPClient(SmarthostConfig("127.0.0.1", starttls="off"), [job], clock)
        transport = StringTransport()
        client.makeConnection(transport)
        results: list[Any] = []
        client.done.addCallback(results.append)
        fed = 0
        while not results and fed < 10 * 1024 * 1024:
            client.dataReceived((b"220-" + b"x" * 60 + b"\r\n") * 1000)
            fed += 64 * 1000
        self.assertTrue(results)
        self.assertLess(fed, 200 * 1024)
        self.assertEqual(results[0][0].temporary(), ["x@remote.example"])
        self.assertIn("reply too long", results[0][0].replies["x@remote.example"][1])
        self.assertLess(len(client._lines), 2000)

    async def test_endless_multiline_reply_live(self) -> None:
        """The same over a socket: 4 MB of `220-` continuation lines defer the message, nothing is sent."""
        gone: defer.Deferred[None] = defer.Deferred()

        class Flooder(Protocol):
            """Sends 4 MB of continuation lines in small writes, so that no single read passes the limit."""

            call: Any = None

            def connectionMade(self) -> None:
                self.left = 4 * 1024 * 1024 // (76 * 50)
                self.more()

            def more(self) -> None:
                self.call = None
                if self.left:
                    self.left -= 1
                    self.transport.write((b"220-" + b"z" * 70 + b"\r\n") * 50)
                    self.call = reactor.callLater(0.0005, self.more)

            def connectionLost(self, reason: Any = None) -> None:
                if self.call is not None and self.call.active():
                    self.call.cancel()
                gone.callback(None)

        port = reactor.listenTCP(0, Factory.forProtocol(Flooder), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        path = os.path.join(tmpdir(self), "m.eml")
        with open(path, "wb") as f:
            f.write(b"Subject: x\r\n\r\ny\r\n")
        cfg = SmarthostConfig("127.0.0.1", port.getHost().port, "off")
        result = await deliver(reactor, cfg, "a@example.test", ["x@remote.example"], path, 20)
        self.assertEqual(result.temporary(), ["x@remote.example"])
        self.assertIn("reply too long", result.replies["x@remote.example"][1])
        await gone  # the client aborted: the flooder's side closes too


class DSNTests(SynchronousTestCase):
    def test_reply_text_capped(self) -> None:
        """A 64 KiB smarthost reply becomes at most 900 characters in each part of the DSN."""
        dsn = build_dsn("mx.example.test", "a@example.test", {"x@remote.example": (550, "550 " + "y" * 65536)},
                        b"Subject: s\r\n", "q1", 0.0, 1.0, False)
        self.assertLess(max(len(line) for line in dsn.split(b"\r\n")), 1000)


class QueueRescanTests(SynchronousTestCase):
    def test_rescan_keeps_messages_committed_meanwhile(self) -> None:
        """A flush rescan (now in the pool) drops only entries it knew of, never one committed while it ran."""
        from mailgw.smtp.queue import QueueEntry, RelayQueue

        queue = RelayQueue(os.path.join(tmpdir(self), "q"), Clock(), None)  # type: ignore[arg-type]
        old, new = QueueEntry("a1", "s@x.test", ["r@y.test"], 1.0), QueueEntry("b2", "s@x.test", ["r@y.test"], 2.0)
        queue.index = {"a1": old}
        known = set(queue.index)
        queue.index["b2"] = new  # committed after the scan started
        queue.adopt_index([], known)
        self.assertEqual(list(queue.index), ["b2"])
