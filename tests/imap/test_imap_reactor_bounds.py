"""Per-command work is bounded and paced (issue 12): LIST/LSUB patterns, SEARCH keys, the pacer itself."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from mailgw.imap import pacing
from mailgw.imap.names import MAX_MATCH_WORK, Pattern

from tests.imap.imap_testing import MESSAGE, Harness


class PacerTests(unittest.SynchronousTestCase):
    """The pacer yields once a slice is used and stops loops of a closed session."""

    def test_yields_when_the_slice_is_used(self) -> None:
        """A loop that uses its slice waits for a reactor turn; it finishes once the reactor runs."""
        reactor = MemoryReactorClock()
        now = [0.0]
        pacer = pacing.Pacer(reactor, clock=lambda: now[0], slice_=0.01)
        seen: list[int] = []

        async def loop() -> None:
            for i in range(3):
                await pacer.tick()
                seen.append(i)
                now[0] += 0.02

        d = Deferred.fromCoroutine(loop())
        self.assertEqual(seen, [0])
        self.assertNoResult(d)
        reactor.advance(0)
        self.assertEqual(seen, [0, 1, 2])
        self.successResultOf(d)
        self.assertEqual(pacer.yields, 2)

    def test_closing_stops_the_loop(self) -> None:
        """tick() is False once the session is closing."""
        closing = [False]
        pacer = pacing.Pacer(MemoryReactorClock(), lambda: closing[0])

        async def one() -> bool:
            return await pacer.tick()

        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(one())))
        closing[0] = True
        self.assertFalse(self.successResultOf(Deferred.fromCoroutine(one())))


class ListBoundTests(unittest.SynchronousTestCase):
    """LIST "" (p1 ... pN): at most 32 patterns, a work bound, linear matching."""

    def setUp(self) -> None:
        self.h = Harness()
        for i in range(100):
            self.h.account().create_folder("f%03d-%s" % (i, "ab" * 90))
        self.c = self.h.connect()
        self.c.login()

    def test_too_many_patterns(self) -> None:
        """33 patterns are BAD Too many mailbox patterns."""
        pats = b" ".join(b'"p%d*"' % i for i in range(33))
        self.assertEqual(self.c.send(b'a LIST "" (' + pats + b")\r\n"), b"a BAD Too many mailbox patterns\r\n")

    def test_work_bound(self) -> None:
        """Patterns x mailboxes x pattern words over the bound: NO [LIMIT], nothing listed."""
        pats = b" ".join(b'"' + b"*a" * 15 + b"b" * 400 + b'%d"' % i for i in range(30))
        self.assertGreater(30 * Pattern("*a" * 15 + "b" * 400).words * 100 * 190, MAX_MATCH_WORK)
        self.assertEqual(self.c.send(b'a LIST "" (' + pats + b")\r\n"),
                         b"a NO [LIMIT] Too many mailbox patterns for this many mailboxes\r\n")

    def test_many_patterns_under_the_bound(self) -> None:
        """32 short patterns are answered; a name matched by several is listed once."""
        pats = b" ".join([b'"f00*"', b'"f001*"'] + [b'"*a*b*a*b*a*b*z%d"' % i for i in range(30)])
        out = self.c.send(b'a LIST "" (' + pats + b")\r\n")
        self.assertEqual(out.count(b"* LIST "), 10)
        self.assertTrue(out.endswith(b"a OK List completed.\r\n"))

    def test_list_yields_between_mailboxes(self) -> None:
        """With a zero slice, LIST gives the reactor a turn between mailboxes before it answers."""
        self.patch(pacing, "SLICE", 0.0)
        self.c.proto.dataReceived(b'a LIST "" "*"\r\n')
        self.assertEqual(self.c.transport.value(), b"")
        out = self.c.read()
        self.assertEqual(out.count(b"* LIST "), len(self.successResultOf(self.h.account().list_folders())))
        self.assertTrue(out.endswith(b"a OK List completed.\r\n"))

    def test_lsub_parents_and_bound(self) -> None:
        """LSUB with "%" shows an unsubscribed parent once as \\Noselect, also with many children."""
        for i in range(50):
            self.successResultOf(self.h.account().subscribe("p/c%d" % i))
        out = self.c.send(b'a LSUB "" "%"\r\n')
        self.assertEqual(out.count(b'* LSUB (\\Noselect) "/" p\r\n'), 1)
        self.assertNotIn(b"p/c", out)
        self.assertTrue(out.endswith(b"a OK Lsub completed.\r\n"))


class PatternTests(unittest.SynchronousTestCase):
    """The bit-parallel matcher."""

    def test_semantics(self) -> None:
        """`*` crosses the separator, `%` does not; INBOX is case-insensitive; runs of wildcards collapse."""
        cases = [("*", "a/b", True), ("%", "a/b", False), ("%/%", "a/b", True), ("a%", "a", True),
                 ("inbox", "INBOX", True), ("INBOX/%", "INBOX/x", True), ("Inbox*", "INBOX/x/y", True),
                 ("a**%%b", "a/x/b", True), ("%%", "a/b", False), ("a*b", "ab", True), ("a*b", "a/c", False),
                 ("", "", True), ("", "a", False), ("*a*a*a*a*a*b", "a" * 5000, False)]
        for pattern, name, want in cases:
            self.assertEqual(Pattern(pattern).match(name), want, (pattern, name))


class SearchBoundTests(unittest.SynchronousTestCase):
    """SEARCH: texts prepared once, text keys capped, cheap keys first, paced."""

    def setUp(self) -> None:
        self.h = Harness()
        for _ in range(20):
            self.h.account().append("INBOX", MESSAGE)
        self.c = self.h.connect()
        self.c.select()

    def test_distinct_text_keys_capped(self) -> None:
        """33 distinct text keys are BAD; 450 copies of one key are fine (it is evaluated once per message)."""
        many = b" ".join(b"BODY w%d" % i for i in range(33))
        self.assertEqual(self.c.send(b"a SEARCH " + many + b"\r\n"), b"a BAD Too many search keys\r\n")
        out = self.c.send(b"b SEARCH " + b"NOT BODY nothere " * 450 + b"ALL\r\n")
        self.assertEqual(out, b"* SEARCH " + b" ".join(b"%d" % i for i in range(1, 21)) + b"\r\nb OK Search completed.\r\n")

    def test_cheap_keys_decide_first(self) -> None:
        """`FLAGGED BODY x` on unflagged messages never decodes a body; `OR BODY Bob FLAGGED` still finds them."""
        from mailgw.imap import search
        decoded: list[Any] = []
        original = search._texts
        self.patch(search, "_texts", lambda root: decoded.append(root) or original(root))
        self.assertEqual(self.c.send(b"a SEARCH FLAGGED BODY Bob\r\n"), b"* SEARCH\r\na OK Search completed.\r\n")
        self.assertEqual(decoded, [])
        out = self.c.send(b"b SEARCH OR BODY Bob FLAGGED\r\n")
        self.assertTrue(out.startswith(b"* SEARCH 1 2 3"), out)
        self.assertEqual(len(decoded), 20)  # once per message, not once per key

    def test_codec_names_that_are_no_charset(self) -> None:
        """charset=punycode (a quadratic Python decoder), idna, unicode_escape: the body is read as raw bytes, fast."""
        import time
        for charset in (b"punycode", b"idna", b"unicode_escape", b"zlib"):
            msg = (b"Subject: p\r\nContent-Type: text/plain; charset=" + charset + b"\r\n\r\n"
                   + b"a" * 100000 + b"-needle-" + b"b" * 100000 + b"\r\n")
            self.h.account().append("INBOX", msg)
        c = self.h.connect()
        c.select()
        t0 = time.perf_counter()
        out = c.send(b"a SEARCH BODY needle\r\n")
        self.assertLess(time.perf_counter() - t0, 2.0)
        self.assertEqual(out, b"* SEARCH 21 22 23 24\r\na OK Search completed.\r\n")

    def test_search_yields_between_messages(self) -> None:
        """With a zero slice, SEARCH gives the reactor a turn between messages before it answers."""
        self.patch(pacing, "SLICE", 0.0)
        self.c.proto.dataReceived(b"a SEARCH BODY Bob\r\n")
        self.assertEqual(self.c.transport.value(), b"")
        out = self.c.read()
        self.assertTrue(out.endswith(b"a OK Search completed.\r\n"))
        self.assertEqual(out.count(b" "), 21 + 3)


class PipelineTurnTests(unittest.SynchronousTestCase):
    """Pipelined commands are run a bounded number per reactor turn."""

    def test_pipelined_commands_span_reactor_turns(self) -> None:
        """200 NOOPs in one segment: at most 64 answered in the first turn, all 200 in order after more turns."""
        c = Harness().connect()
        c.proto.dataReceived(b"".join(b"t%d NOOP\r\n" % i for i in range(200)))
        first = c.transport.value()
        self.assertLessEqual(first.count(b"OK NOOP completed."), 64)
        self.assertGreater(first.count(b"OK NOOP completed."), 0)
        out = c.read()
        self.assertEqual(out, b"".join(b"t%d OK NOOP completed.\r\n" % i for i in range(200)))
