"""Property tests of the wire layer: any input gives a parse error or a value, never an exception or a hang.

Each property that walks bytes runs its call in a thread with a join deadline (`within`), so a loop
that stops advancing fails the test instead of hanging it (issue 12: `Cc: a) b` looped forever), and
bounds the output size against the input size.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from mailgw.imap.envelope import MAX_ADDRESSES, addresses, bodystructure, envelope
from mailgw.imap.mime import parse_message, section_bytes
from mailgw.imap.names import Pattern
from mailgw.imap.wire import framing, mutf7, sequence
from mailgw.imap.wire.grammar import parse_command
from mailgw.imap.wire.reader import ParseError
from mailgw.imap.wire.response import encode

from tests.imap.imap_testing import DEADLINE, within

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IMAP_ALPHABET = st.sampled_from([b"a", b"1", b" ", b"(", b")", b"[", b"]", b"{", b"}", b"+", b"*", b"%", b'"',
                                 b"\\", b"\r\n", b"<", b">", b".", b":", b",", b"\x00", b"\xff", b"FETCH",
                                 b"UID", b"SEARCH", b"BODY[", b"HEADER.FIELDS", b"NOT", b"OR", b"{3}", b"{2+}",
                                 b"APPEND", b"STORE", b"LIST", b"LOGIN", b"SELECT", b"INBOX", b"\n"])
imap_noise = st.lists(IMAP_ALPHABET, max_size=60).map(b"".join)


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADDRESS_ALPHABET = st.sampled_from([b"a", b"B", b".", b" ", b"\t", b"\r\n ", b"(", b")", b"<", b">", b"@", b",",
                                    b";", b":", b'"', b"\\", b"[", b"]", b"=?utf-8?q?x?=", b"\xc3\xa9", b"\x00",
                                    b"Real Name", b"user@domain", b"group:"])
address_noise = st.lists(ADDRESS_ALPHABET, max_size=80).map(b"".join)
HEADER_NAMES = st.sampled_from([b"From", b"To", b"Cc", b"Bcc", b"Sender", b"Reply-To", b"Subject", b"Date",
                                b"Content-Type", b"Content-Disposition", b"Content-Language", b"Message-ID",
                                b"Content-Transfer-Encoding", b"X-Junk"])
CTYPES = st.sampled_from([b"multipart/mixed; boundary=b", b"message/rfc822", b"text/plain; charset=utf-8",
                          b"multipart/digest; boundary=b", b"text/html; charset*=x", b"application/x; name=\"a",
                          b"multipart/alternative; boundary=\"b\""])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Messages built from hostile headers and bodies that reuse the boundary `b`, nested at random."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        fields = [draw(HEADER_NAMES) + b": " + draw(st.one_of(address_noise, CTYPES))
                  for _ in range(draw(st.integers(0, 4)))]
        body = draw(st.lists(st.sampled_from([b"--b\r\n", b"--b--\r\n", b"\r\n", b"text ", b"Cc: a) b\r\n",
                                              b"Content-Type: message/rfc822\r\n\r\n", b"\n"]), max_size=10))
        parts.append(b"\r\n".join(fields) + b"\r\n\r\n" + b"".join(body))
    return b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + b"--b\r\n".join(parts) + b"--b--\r\n"


def run_framer(data: bytes, accept: bool = True) -> list[object]:
    f = framing.Framer(max_line=4096)
    f.feed(data)
    events: list[object] = []
    for _ in range(10000):
        ev = f.pull()
        if ev is None:
            break
        if isinstance(ev, framing.LiteralOffer):
            f.accept() if accept else f.reject()
        events.append(ev)
    return events


class ParserProperties(unittest.SynchronousTestCase):
    """The framer and grammar on arbitrary bytes."""

    @SETTINGS
    @given(st.one_of(st.binary(max_size=300), imap_noise.map(lambda b: b"t1 " + b)))
    def test_parse_never_raises_unexpectedly(self, data: bytes) -> None:
        """Every complete command either parses or raises ParseError."""
        for ev in run_framer(data + b"\r\n"):
            if isinstance(ev, framing.Command):
                try:
                    parse_command(ev)
                except ParseError:
                    pass

    @SETTINGS
    @given(imap_noise, st.integers(min_value=1, max_value=7))
    def test_chunking_does_not_matter(self, data: bytes, step: int) -> None:
        """Feeding byte by byte or in chunks yields the same commands."""
        whole = [e for e in run_framer(data + b"\r\n") if isinstance(e, framing.Command)]
        f = framing.Framer(max_line=4096)
        chunked: list[object] = []
        payload = data + b"\r\n"
        for i in range(0, len(payload), step):
            f.feed(payload[i : i + step])
            while True:
                ev = f.pull()
                if ev is None:
                    break
                if isinstance(ev, framing.LiteralOffer):
                    f.accept()
                if isinstance(ev, framing.Command):
                    chunked.append(ev)
        self.assertEqual([(c.lines, c.literals) for c in whole],  # type: ignore[attr-defined]
                         [(c.lines, c.literals) for c in chunked])  # type: ignore[attr-defined]

    @SETTINGS
    @given(st.text(max_size=40))
    def test_mutf7_round_trip(self, name: str) -> None:
        """encode/decode round-trips every string without lone surrogates."""
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):
            return
        self.assertEqual(mutf7.decode(mutf7.encode(name)), name)

    @SETTINGS
    @given(st.binary(max_size=40))
    def test_mutf7_decode_total(self, data: bytes) -> None:
        """decode either returns text that re-encodes to the input, or raises MUTF7Error."""
        try:
            text = mutf7.decode(data)
        except mutf7.MUTF7Error:
            return
        self.assertEqual(mutf7.encode(text), data)

    @SETTINGS
    @given(st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=20),
           st.integers(0, 50), st.booleans())
    def test_sequence_set_matches_model(self, ranges: list[tuple[int, int]], count: int, star: bool) -> None:
        """Sequence numbers from the range algebra equal a naive set model."""
        text = b",".join(b"%d:%s" % (a, b"*" if star and i == 0 else b"%d" % b) for i, (a, b) in enumerate(ranges))
        sset = sequence.parse(text)
        model: set[int] = set()
        for i, (a, b) in enumerate(ranges):
            hi = count if star and i == 0 else b
            lo, hi = min(a, hi), max(a, hi)
            model.update(n for n in range(lo, hi + 1) if 1 <= n <= count)
        self.assertEqual(sset.sequence_numbers(count), sorted(model))
        uids = list(range(3, 3 + 2 * count, 2))
        got = [uids[i] for i in sset.uid_indexes(uids)]
        umodel: set[int] = set()
        for i, (a, b) in enumerate(ranges):
            hi = uids[-1] if star and i == 0 and uids else b
            lo, hi = min(a, hi), max(a, hi)
            umodel.update(u for u in uids if lo <= u <= hi)
        self.assertEqual(got, sorted(umodel))

    @SETTINGS
    @given(st.binary(max_size=600))
    def test_mime_total(self, data: bytes) -> None:
        """Any bytes as a message give an ENVELOPE, a BODYSTRUCTURE and sections without raising."""
        root = parse_message(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + data)
        encode(envelope(root))
        encode(bodystructure(root))
        section_bytes(root, (1,), "MIME", ())
        section_bytes(root, (1, 2), "HEADER", ())
        section_bytes(root, (), "HEADER.FIELDS", (b"from",))

    def test_deep_nesting_is_refused_quickly(self) -> None:
        """30,000 parentheses in SEARCH are a ParseError, not a RecursionError."""
        cmd = framing.Command([b"a SEARCH " + b"(" * 30000 + b"ALL" + b")" * 30000])
        self.assertRaises(ParseError, parse_command, cmd)
        cmd = framing.Command([b"a SEARCH " + b"NOT " * 10000 + b"ALL"])
        self.assertRaises(ParseError, parse_command, cmd)


class TerminationProperties(unittest.SynchronousTestCase):
    """Issue 12: every tokenizer/parser loop advances; output stays proportional to input."""

    @FAST
    @given(address_noise)
    def test_addresses_terminate(self, raw: bytes) -> None:
        """Any address header gives NIL or a bounded list of 4-tuples of bytes/NIL, within the deadline."""
        out = within(DEADLINE, addresses, raw)
        if out is None:
            return
        self.assertLessEqual(len(out), min(MAX_ADDRESSES, len(raw) + 1))
        for addr in out:
            self.assertEqual(len(addr), 4)
            self.assertTrue(all(v is None or isinstance(v, bytes) for v in addr))
        self.assertLessEqual(len(encode(out)), 64 * len(raw) + 64)

    @FAST
    @given(messages())
    def test_envelope_bodystructure_terminate(self, data: bytes) -> None:
        """ENVELOPE, BODYSTRUCTURE, BODY and sections of hostile MIME finish within the deadline, output bounded."""
        def run() -> int:
            root = parse_message(data)
            total = len(encode(envelope(root))) + len(encode(bodystructure(root))) + len(encode(bodystructure(root, False)))
            for path in ((1,), (1, 1), (2, 1, 1)):
                section_bytes(root, path, "MIME", ())
                section_bytes(root, path, "HEADER.FIELDS", (b"cc",))
            return total
        self.assertLessEqual(within(DEADLINE, run), 200 * len(data) + 4096)

    @FAST
    @given(st.binary(max_size=400), st.binary(max_size=400))
    def test_arbitrary_header_and_body_bytes(self, header: bytes, body: bytes) -> None:
        """Arbitrary header and body bytes (as a message and as an attached message/rfc822) never raise or hang."""
        def run() -> None:
            for data in (header + b"\r\n\r\n" + body,
                         b"Content-Type: message/rfc822\r\n\r\n" + header + b"\r\n\r\n" + body):
                root = parse_message(data)
                encode(envelope(root))
                encode(bodystructure(root))
        within(DEADLINE, run)

    @FAST
    @given(st.lists(st.sampled_from([b"a ", b"{0+}", b"{0}", b"{1+}", b"{2}", b"\r\n", b"x", b"\n", b"{", b"}", b"+"]),
                    max_size=80).map(b"".join))
    def test_every_literal_is_offered(self, data: bytes) -> None:
        """Every literal announcement, zero-length included, produces a LiteralOffer (the session's caps see it)."""
        def run() -> tuple[list[object], int]:
            f = framing.Framer(max_line=4096)
            f.feed(b"t " + data + b"\r\n")
            events: list[object] = []
            while (ev := f.pull()) is not None:
                if isinstance(ev, framing.LiteralOffer):
                    f.accept()
                events.append(ev)
            return events, len(f._lines)  # lines of a command still waiting for its literal's octets

        events, open_lines = within(DEADLINE, run)
        offers = 0  # offers since the last command ended or was dropped
        for ev in events:
            if isinstance(ev, framing.LiteralOffer):
                offers += 1
            elif isinstance(ev, framing.Command):
                self.assertEqual(len(ev.literals), len(ev.lines) - 1)
                self.assertEqual(offers, len(ev.literals))
                offers = 0
            elif isinstance(ev, (framing.BadLiteral, framing.LineTooLong)):
                offers = 0  # the command so far is dropped
        self.assertEqual(offers, open_lines)
        self.assertLessEqual(len(events), len(data) + 3)

    @FAST
    @given(st.one_of(st.binary(max_size=300), imap_noise.map(lambda b: b"t1 " + b)))
    def test_grammar_terminates(self, data: bytes) -> None:
        """The framer and the whole grammar finish within the deadline; only ParseError escapes."""
        def run() -> None:
            for ev in run_framer(data + b"\r\n"):
                if isinstance(ev, framing.Command):
                    try:
                        parse_command(ev)
                    except ParseError:
                        pass
        within(DEADLINE, run)

    @FAST
    @given(st.text(alphabet="ab/*%", max_size=8), st.text(alphabet="ab/", max_size=10))
    def test_pattern_matches_reference(self, pattern: str, name: str) -> None:
        """The bit-parallel LIST matcher agrees with a regular-expression reference on small inputs."""
        rx = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
        self.assertEqual(Pattern(pattern).match(name), re.fullmatch(rx, name, re.S) is not None)
