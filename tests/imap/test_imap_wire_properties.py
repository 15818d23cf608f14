"""Property tests of the wire layer: any input gives a parse error or a value, never an exception or a hang."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from mailgw.imap.envelope import bodystructure, envelope
from mailgw.imap.mime import parse_message, section_bytes
from mailgw.imap.wire import framing, mutf7, sequence
from mailgw.imap.wire.grammar import parse_command
from mailgw.imap.wire.reader import ParseError
from mailgw.imap.wire.response import encode

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IMAP_ALPHABET = st.sampled_from([b"a", b"1", b" ", b"(", b")", b"[", b"]", b"{", b"}", b"+", b"*", b"%", b'"',
                                 b"\\", b"\r\n", b"<", b">", b".", b":", b",", b"\x00", b"\xff", b"FETCH",
                                 b"UID", b"SEARCH", b"BODY[", b"HEADER.FIELDS", b"NOT", b"OR", b"{3}", b"{2+}",
                                 b"APPEND", b"STORE", b"LIST", b"LOGIN", b"SELECT", b"INBOX", b"\n"])
imap_noise = st.lists(IMAP_ALPHABET, max_size=60).map(b"".join)


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
