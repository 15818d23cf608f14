"""Parser and resource limits (security.md D, G): tags, lines, literals, nesting, sets, pipelining, timeouts."""

from __future__ import annotations

import time

from twisted.trial import unittest

from mailgw.imap.config import IMAPLimits
from mailgw.imap.wire import sequence

from tests.imap.imap_testing import MESSAGE, Harness

BAD_TAG = b"* BAD Error in IMAP command received by server.\r\n"


class TagAndCommandTests(unittest.SynchronousTestCase):
    """Tags '*' and '+' and specials are refused; unknown commands are BAD; 20 bad in a row close."""

    def test_bad_tags(self) -> None:
        """'*', '+', a missing tag and tags with specials get the untagged BAD and the session lives."""
        c = Harness().connect()
        for line in (b"* NOOP", b"+ NOOP", b"", b"a%b NOOP", b"a(b NOOP", b"{3} NOOP", b"\x00\xff NOOP"):
            self.assertEqual(c.send(line + b"\r\n"), BAD_TAG, line)
        self.assertEqual(c.send(b"ok NOOP\r\n"), b"ok OK NOOP completed.\r\n")

    def test_unknown_and_missing_command(self) -> None:
        """An unknown command is '<tag> BAD Unknown command'; a bare tag is 'Missing command.'."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a FROB\r\n"), b"a BAD Unknown command\r\n")
        self.assertEqual(c.send(b"b\r\n"), b"b BAD Missing command.\r\n")
        self.assertEqual(c.send(b"c UID NOOP\r\n"), b"c BAD Unknown command\r\n")

    def test_too_many_bad_commands(self) -> None:
        """The 20th bad command in a row is answered with BYE and the connection closes."""
        c = Harness().connect()
        out = c.send(b"a FROB\r\n" * 20)
        self.assertTrue(out.endswith(b"a BAD Unknown command\r\n* BYE Too many invalid IMAP commands.\r\n"))
        self.assertTrue(c.transport.disconnecting)


class LineAndLiteralTests(unittest.SynchronousTestCase):
    """64 KiB lines, literal announcements, LITERAL+ semantics."""

    def test_long_line_bad_then_bye(self) -> None:
        """The first over-long line is BAD and skipped; the second closes with BYE."""
        c = Harness().connect()
        out = c.send(b"a NOOP " + b"x" * 70000 + b"\r\nb NOOP\r\n")
        self.assertEqual(out, b"* BAD Line too long\r\nb OK NOOP completed.\r\n")
        out = c.send(b"x" * 70000)
        self.assertEqual(out, b"* BYE Line too long\r\n")
        self.assertTrue(c.transport.disconnecting)

    def test_unterminated_flood_is_not_buffered(self) -> None:
        """A stream without CRLF never grows the buffer past the line limit."""
        c = Harness().connect()
        c.send(b"a NOOP " + b"y" * 70000)
        self.assertLess(c.proto.framer.buffered(), 70000)

    def test_preauth_literal_cap(self) -> None:
        """Before login a literal over 4096 octets gets BYE and a close, without '+'."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a LOGIN {5000}\r\n"), b"* BYE Literal size too large\r\n")
        self.assertTrue(c.transport.disconnecting)

    def test_zero_length_literals_count_before_login(self) -> None:
        """Issue 12: `{0+}` literals count against the pre-auth command cap; the flood is closed, memory stays bounded."""
        c = Harness().connect()
        line = b"a LOGIN " + b"x" * 65000 + b" {0+}\r\n"
        out = c.send(line * 5)
        self.assertEqual(out, b"* BYE Command too long\r\n")
        self.assertTrue(c.transport.disconnecting)
        self.assertLess(c.proto.framer.buffered() + c.proto.framer.line_bytes(), 70000)

    def test_zero_length_literals_are_counted(self) -> None:
        """After login, 300 `{0+}` literals in one command hit the 256-literal cap (BYE: LITERAL+ cannot be refused)."""
        c = Harness().connect()
        c.login()
        out = c.send(b"a NOOP" + b" {0+}\r\n" * 300 + b"\r\n")
        self.assertEqual(out, b"* BYE Too many literals\r\n")
        c = Harness().connect()
        c.login()
        out = c.send(b"a NOOP" + b" {0}\r\n" * 257)
        self.assertTrue(out.endswith(b"a BAD Too many literals\r\n"), out[-80:])

    def test_lines_of_one_command_are_capped(self) -> None:
        """After login the lines of one command together are capped at 1 MiB, zero-length literals between them or not."""
        c = Harness().connect()
        c.login()
        out = c.send((b"a NOOP " + b"y" * 60000 + b" {0+}\r\n") * 20)
        self.assertEqual(out, b"* BYE Command too long\r\n")

    def test_refused_command_keeps_only_its_tag(self) -> None:
        """The rest of a command whose LITERAL+ was refused is read and dropped, not kept line by line."""
        c = Harness().connect()
        c.login()
        c.send(b"a CREATE {70000+}\r\n" + b"z" * 70000)
        c.send(b" x {1+}\r\nq" * 2000)
        self.assertLess(c.proto.framer.line_bytes(), 100)
        self.assertEqual(c.send(b"\r\n"), b"a NO [TOOBIG] Literal too big\r\n")

    def test_literal_plus_is_data(self) -> None:
        """LITERAL+ octets are the argument, never commands (security.md D21)."""
        h = Harness()
        c = h.connect()
        c.login()
        out = c.send(b"a CREATE {14+}\r\nb CAPABILITY\r\n\r\n")
        self.assertEqual(out, b"a NO Mailbox name is not valid mUTF-7\r\n")
        out = c.send(b"n NOOP {12+}\r\nz CAPABILITY\r\n")
        self.assertEqual(out, b"n BAD Error in IMAP command received by server.\r\n")

    def test_huge_literal_sizes(self) -> None:
        """{99999999999999999999} is BAD; its non-synchronising form cannot be resynchronised and closes."""
        c = Harness().connect()
        c.login()
        self.assertEqual(c.send(b"a APPEND INBOX {99999999999999999999}\r\n"), b"a BAD Invalid literal size\r\n")
        self.assertEqual(c.send(b"b APPEND INBOX {99999999999999999999+}\r\n"), b"* BYE Invalid literal size\r\n")

    def test_command_literal_cap(self) -> None:
        """Literals in commands other than APPEND are capped (64 KiB) with NO [TOOBIG] before '+'."""
        c = Harness().connect()
        c.login()
        self.assertEqual(c.send(b"a CREATE {70000}\r\n"), b"a NO [TOOBIG] Literal too big (APPENDLIMIT 65536)\r\n")

    def test_big_append_is_spooled(self) -> None:
        """A literal over the spool threshold goes to a temporary file and is appended intact."""
        h = Harness(limits=IMAPLimits(spool_threshold=1024))
        c = h.connect()
        c.login()
        body = MESSAGE + b"z" * 5000 + b"\r\n"
        self.assertEqual(c.send(b"a APPEND INBOX {%d}\r\n" % len(body)), b"+ Ready for literal data\r\n")
        c.proto.dataReceived(body[:3000])
        self.assertIsNotNone(c.proto.framer._literal)
        self.assertFalse(isinstance(c.proto.framer._literal, bytearray))
        self.assertTrue(c.send(body[3000:] + b"\r\n").startswith(b"a OK [APPENDUID"))
        self.assertEqual(h.account().folder("INBOX").stored[1].data, body)


class SequenceSetTests(unittest.SynchronousTestCase):
    """Sequence sets are parsed in linear time and evaluated against the real count."""

    def test_huge_range_is_cheap(self) -> None:
        """UID FETCH 1:4294967295 and 5,000 comma parts cost milliseconds, not minutes."""
        h = Harness()
        for _ in range(3):
            h.account().append("INBOX", MESSAGE)
        c = h.connect()
        c.select()
        t0 = time.perf_counter()
        out = c.send(b"a UID FETCH 1:4294967295 (UID)\r\n")
        many = b",".join(b"%d" % i for i in range(1, 5001))
        out2 = c.send(b"b FETCH " + many + b",1:* (UID)\r\n")
        elapsed = time.perf_counter() - t0
        self.assertTrue(out.endswith(b"a OK Fetch completed.\r\n"))
        self.assertEqual(out2.count(b" FETCH "), 3)
        self.assertLess(elapsed, 1.0)

    def test_parse_linear(self) -> None:
        """Parsing 10,000 ranges takes well under a second and merges duplicates."""
        text = b",".join([b"1:*"] * 10000)
        t0 = time.perf_counter()
        sset = sequence.parse(text)
        self.assertEqual(sset.sequence_numbers(5), [1, 2, 3, 4, 5])
        self.assertLess(time.perf_counter() - t0, 1.0)

    def test_invalid(self) -> None:
        """0, too-large numbers and empty parts are invalid."""
        for bad in (b"0", b"4294967296", b"1:", b"1,,2", b"", b"a", b"99999999999"):
            self.assertRaises(sequence.SequenceSetError, sequence.parse, bad)


class PipeliningAndTimeoutTests(unittest.SynchronousTestCase):
    """Pipelined commands wait with a cap (reading pauses); idle sessions are logged out."""

    def test_pipelined_commands_run_in_order(self) -> None:
        """Many commands in one segment are answered in order."""
        c = Harness().connect()
        out = c.send(b"".join(b"t%d NOOP\r\n" % i for i in range(100)))
        self.assertEqual(out, b"".join(b"t%d OK NOOP completed.\r\n" % i for i in range(100)))

    def test_reading_pauses_while_busy(self) -> None:
        """While a command waits (a slow authentication), input past the cap pauses the transport."""
        from twisted.internet.defer import Deferred
        h = Harness()
        pending: list[Deferred] = []
        h.directory.check_password = lambda login, pw: pending.append(Deferred()) or pending[-1]  # type: ignore
        c = h.connect()
        c.send(b"a LOGIN alice x\r\n")
        c.send(b"b NOOP\r\n" * 200)
        self.assertEqual(c.transport.producerState, "paused")
        pending[0].callback(None)
        out = c.read()
        self.assertTrue(out.startswith(b"a NO [AUTHENTICATIONFAILED]"))
        self.assertEqual(out.count(b"OK NOOP completed."), 200)
        self.assertEqual(c.transport.producerState, "producing")

    def test_preauth_timeout(self) -> None:
        """60 s without a command before login ends the session with BYE."""
        h = Harness()
        c = h.connect()
        h.reactor.advance(59)
        self.assertEqual(c.read(), b"")
        h.reactor.advance(2)
        self.assertEqual(c.read(), b"* BYE Disconnected for inactivity.\r\n")
        self.assertTrue(c.transport.disconnecting)

    def test_preauth_deadline_is_absolute(self) -> None:
        """Issue 12: bytes dripped without ever ending a line (or whole commands) do not move the pre-auth deadline."""
        h = Harness()
        c = h.connect()
        for _ in range(59):
            h.reactor.advance(1)
            c.send(b"x")
        self.assertEqual(c.read(), b"")
        c.send(b"\r\na NOOP\r\n")
        h.reactor.advance(1.5)
        self.assertTrue(c.read().endswith(b"* BYE Disconnected for inactivity.\r\n"))
        self.assertTrue(c.transport.disconnecting)

    def test_autologout_counts_only_complete_commands(self) -> None:
        """After login a partial line does not refresh the autologout timer; a complete command does."""
        h = Harness()
        c = h.connect()
        c.login()
        h.reactor.advance(1000)
        c.send(b"a NOOP\r\n")
        h.reactor.advance(1000)
        for _ in range(799):
            c.send(b"x")
            h.reactor.advance(1)
        self.assertEqual(c.read(), b"")
        h.reactor.advance(2)
        self.assertEqual(c.read(), b"* BYE Disconnected for inactivity.\r\n")

    def test_autologout_after_login(self) -> None:
        """After login the timeout is 30 minutes."""
        h = Harness()
        c = h.connect()
        c.login()
        h.reactor.advance(1799)
        self.assertEqual(c.read(), b"")
        h.reactor.advance(2)
        self.assertEqual(c.read(), b"* BYE Disconnected for inactivity.\r\n")


class SlowReaderTests(unittest.SynchronousTestCase):
    """A client that does not read its replies stops being read."""

    def test_commands_wait_while_writes_are_paused(self) -> None:
        """While the transport's buffer is full, queued commands wait and reading pauses; they run on resume."""
        c = Harness().connect()
        c.proto.pauseProducing()
        self.assertEqual(c.send(b"a NOOP\r\n" * 100), b"")
        self.assertEqual(c.transport.producerState, "paused")
        c.proto.resumeProducing()
        out = c.read()
        self.assertEqual(out.count(b"a OK NOOP completed."), 100)
        self.assertEqual(c.transport.producerState, "producing")


class InterfaceTests(unittest.SynchronousTestCase):
    """The session provides the interfaces it is registered under."""

    def test_verify(self) -> None:
        """IMAPSession provides IFolderListener (store notifications) and IPushProducer (write backpressure)."""
        from twisted.internet.interfaces import IPushProducer
        from zope.interface.verify import verifyObject

        from mailgw.interfaces import IFolderListener
        c = Harness().connect()
        self.assertTrue(verifyObject(IFolderListener, c.proto))
        self.assertTrue(verifyObject(IPushProducer, c.proto))


class AbortTests(unittest.SynchronousTestCase):
    """A closed session whose transport never finishes closing is aborted."""

    def test_abort_after_close(self) -> None:
        """After BYE, a transport still connected 10 s later is aborted."""
        h = Harness()
        c = h.connect()
        aborted: list[bool] = []
        c.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        h.reactor.advance(61)
        self.assertIn(b"* BYE Disconnected for inactivity.", c.read())
        self.assertEqual(aborted, [])
        h.reactor.advance(10)
        self.assertEqual(aborted, [True])


class LiteralTotalTests(unittest.SynchronousTestCase):
    """All literals of one command together are capped (CVE-2025-61600 class)."""

    def test_total_cap(self) -> None:
        """Twenty 60 KiB literals in one SEARCH pass the per-literal cap but not the 1 MiB total."""
        c = Harness().connect()
        c.select()
        chunk = b"x" * 60000
        out = b""
        c.send(b"a SEARCH OR BODY {60000+}\r\n")
        for _ in range(17):
            out += c.send(chunk + b" OR BODY {60000+}\r\n")
        out += c.send(chunk + b" ALL\r\nb NOOP\r\n")
        self.assertEqual(out, b"a NO [TOOBIG] Literal too big\r\nb OK NOOP completed.\r\n")


class BreadthTests(unittest.SynchronousTestCase):
    """Wide SEARCH and FETCH requests are bounded too."""

    def test_too_many_keys_and_items(self) -> None:
        """Over 1,000 search keys or 100 fetch items are BAD."""
        c = Harness().connect()
        c.select()
        self.assertEqual(c.send(b"a SEARCH " + b" ".join([b"ALL"] * 1001) + b"\r\n"), b"a BAD Too many search keys\r\n")
        self.assertEqual(c.send(b"b FETCH 1 (" + b" ".join([b"UID"] * 101) + b")\r\n"),
                         b"b BAD Error in IMAP command FETCH: Too many data items\r\n")
        self.assertEqual(c.send(b"c SEARCH " + b" ".join([b"ALL"] * 500) + b"\r\n"),
                         b"* SEARCH\r\nc OK Search completed.\r\n")
