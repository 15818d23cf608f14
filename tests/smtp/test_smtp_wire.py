"""Table tests for the SMTP wire layer: framing limits, address parsing, DATA unstuffing, dot-stuffing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailgw.smtp.wire import (
    CLOSE_LINE_LIMIT,
    AddressError,
    BareNewline,
    CommandFramer,
    DataDecoder,
    DotStuffer,
    Flood,
    Line,
    TooLong,
    parse_command,
    parse_path,
    stuff_all,
)


def decode(chunks: list[bytes]) -> tuple[DataDecoder, bytes, bytes | None]:
    out: list[bytes] = []
    dec = DataDecoder(out.append)
    rest = None
    for c in chunks:
        rest = dec.feed(c)
        if rest is not None:
            break
    return dec, b"".join(out), rest


def events(framer: CommandFramer) -> list[object]:
    got = []
    while (ev := framer.next_event()) is not None:
        got.append(ev)
        if isinstance(ev, Flood):
            break
    return got


class FramerTests(SynchronousTestCase):
    def test_lines(self) -> None:
        """CRLF-terminated lines come out one at a time and the rest stays buffered."""
        f = CommandFramer()
        f.feed(b"EHLO a\r\nNOOP\r\nMAIL")
        self.assertEqual(events(f), [Line(b"EHLO a"), Line(b"NOOP")])
        self.assertEqual(f.take_buffer(), b"MAIL")

    def test_bare_lf(self) -> None:
        """A command line ended by a bare LF is reported, not executed."""
        f = CommandFramer()
        f.feed(b"NOOP\nRSET\r\n")
        self.assertEqual(events(f), [BareNewline(), Line(b"RSET")])

    def test_too_long_then_usable(self) -> None:
        """An over-long line is discarded to its CRLF and the next line parses."""
        f = CommandFramer(limit=2048)
        f.feed(b"X" * 3000)
        f.feed(b"Y" * 3000 + b"\r\nNOOP\r\n")
        self.assertEqual(events(f), [TooLong(), Line(b"NOOP")])

    def test_flood_closes(self) -> None:
        """More than 64 KiB without a line end is a Flood, and the buffer stays bounded."""
        f = CommandFramer(limit=2048)
        for _ in range(100):
            f.feed(b"Z" * 1024)
            if isinstance(f.next_event(), Flood):
                break
        else:
            self.fail("no Flood")
        self.assertLess(f.buffered, 4096)
        self.assertGreater(100 * 1024, CLOSE_LINE_LIMIT)


class ParseTests(SynchronousTestCase):
    def test_command(self) -> None:
        """Verbs are upper-cased; non-alphabetic verbs are unknown."""
        self.assertEqual(parse_command(b"mail FROM:<a@b.c>").verb, "MAIL")
        self.assertEqual(parse_command(b"\xff\xfe x").verb, "")

    def test_path_ok(self) -> None:
        """A plain address with parameters parses."""
        p = parse_path("FROM:<alice@example.com> SIZE=100 BODY=8BITMIME", "FROM", True, False)
        self.assertEqual(p.address, "alice@example.com")
        self.assertEqual(p.params, {"SIZE": "100", "BODY": "8BITMIME"})

    def test_null_sender(self) -> None:
        """<> is a valid MAIL FROM but never a valid RCPT TO."""
        self.assertEqual(parse_path("FROM:<>", "FROM", True, False).address, "")
        self.assertRaises(AddressError, parse_path, "TO:<>", "TO", False, False)

    def test_relay_tricks_refused(self) -> None:
        """Percent hacks, bang paths, source routes, quoted locals, literals and shell bytes are refused."""
        for addr in ["b%x@gw.example", "@gw.example:b@x.example", '"b@x"@gw.example', "b@x@gw.example",
                     "x!b@gw.example", "b@[192.0.2.9]", "b@gw.", "a;b@x.example", "`id`@x.example",
                     "$(id)@x.example", "a\x00@x.example", "a" * 65 + "@x.example", "a@" + "b" * 250 + ".com",
                     "nodomain", "a@-x.example"]:
            with self.assertRaises(AddressError, msg=addr):
                parse_path(f"TO:<{addr}>", "TO", False, False)

    def test_utf8_needs_smtputf8(self) -> None:
        """A non-ASCII address needs SMTPUTF8 on MAIL FROM."""
        self.assertRaises(AddressError, parse_path, "FROM:<jörg@example.com>", "FROM", False, True)
        self.assertEqual(parse_path("FROM:<jörg@example.com> SMTPUTF8", "FROM", False, True).address,
                         "jörg@example.com")

    def test_bad_params(self) -> None:
        """Malformed and duplicate parameters get 501 5.5.4."""
        for arg in ["FROM:<a@b.co> SIZE==1", "FROM:<a@b.co> SIZE=1 SIZE=2", "FROM:a@b.co"]:
            with self.assertRaises(AddressError) as cm:
                parse_path(arg, "FROM", True, False)
            self.assertEqual((cm.exception.code, cm.exception.enhanced), (501, "5.5.4"))


class DataDecoderTests(SynchronousTestCase):
    def test_simple(self) -> None:
        """The data ends at CRLF.CRLF and the rest is returned for command mode."""
        dec, body, rest = decode([b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n"])
        self.assertEqual(body, b"Subject: x\r\n\r\nhello\r\n")
        self.assertEqual(rest, b"QUIT\r\n")
        self.assertFalse(dec.bare_newline or dec.long_line)

    def test_unstuff(self) -> None:
        """A leading dot is removed once, also on the first line."""
        _, body, _ = decode([b"..first\r\nmid\r\n...x\r\n.\r\n"])
        self.assertEqual(body, b".first\r\nmid\r\n..x\r\n")

    def test_empty(self) -> None:
        """An empty message is just the terminator."""
        _, body, rest = decode([b".\r\n"])
        self.assertEqual((body, rest), (b"", b""))

    def test_byte_at_a_time(self) -> None:
        """Feeding one byte at a time gives the same result."""
        msg = b"a\r\n..b\r\n.c\r\n\r\n.\r\nNOOP\r\n"
        out: list[bytes] = []
        dec = DataDecoder(out.append)
        rest = None
        for i in range(len(msg)):
            rest = dec.feed(msg[i : i + 1])
            if rest is not None:
                break
        self.assertEqual(b"".join(out), b"a\r\n.b\r\nc\r\n\r\n")
        self.assertEqual(rest, b"")
        self.assertEqual(msg[i + 1 :], b"NOOP\r\n")

    def test_bare_variants(self) -> None:
        """Every bare LF / bare CR smuggling variant is detected and never ends the data early."""
        for smuggle in [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"x\ny", b"x\ry", b"\r\n.\r\r\n"]:
            msg = b"Subject: s\r\n\r\nbody" + smuggle + b"MAIL FROM:<evil@x.example>\r\n.\r\n"
            for split in (None, 3, 1):
                chunks = [msg] if split is None else [msg[i : i + split] for i in range(0, len(msg), split)]
                dec, _, rest = decode(chunks)
                self.assertTrue(dec.bare_newline, (smuggle, split))
                self.assertEqual(rest, b"")

    def test_long_line_stays_in_data(self) -> None:
        """A 20,000-byte line with commands after it stays data and sets long_line."""
        msg = b"x" * 20000 + b"\r\nMAIL FROM:<a@b.example>\r\n.\r\nNOOP\r\n"
        for size in (len(msg), 16384, 1000, 7):
            dec, body, rest = decode([msg[i : i + size] for i in range(0, len(msg), size)])
            self.assertTrue(dec.long_line)
            self.assertEqual(body, b"x" * 20000 + b"\r\nMAIL FROM:<a@b.example>\r\n")
            self.assertEqual(rest, b"NOOP\r\n" if size == len(msg) else rest)

    def test_line_of_998_ok(self) -> None:
        """A 998-octet line is within the limit; 999 is not."""
        self.assertFalse(decode([b"y" * 998 + b"\r\n.\r\n"])[0].long_line)
        self.assertTrue(decode([b"y" * 999 + b"\r\n.\r\n"])[0].long_line)


class DotStufferTests(SynchronousTestCase):
    def test_boundaries(self) -> None:
        """Dot lines at 16 KiB and 64 KiB chunk boundaries are stuffed (T5) with one terminator."""
        for offset in (16383, 16384, 16385, 65535, 65536):
            msg = b"a" * (offset - 2) + b"\r\n.\r\n.x\r\nend\r\n"
            wire = stuff_all(msg, chunk=16384)
            self.assertEqual(wire.count(b"\r\n.\r\n"), 1)
            self.assertTrue(wire.endswith(b"end\r\n.\r\n"))
            _, body, rest = decode([wire])
            self.assertEqual((body, rest), (msg, b""))

    def test_first_line_dot(self) -> None:
        """A first line starting with a dot is stuffed."""
        self.assertEqual(stuff_all(b".\r\n"), b"..\r\n.\r\n")

    def test_split_crlf(self) -> None:
        """A CRLF split between two chunks followed by a dot line is stuffed."""
        s = DotStuffer()
        wire = s.stuff(b"a\r") + s.stuff(b"\n.b\r\n") + s.finish()
        self.assertEqual(wire, b"a\r\n..b\r\n.\r\n")

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([b"\r\n", b".", b"a", b"..", b"\r\n.\r\n", b"x" * 5]), max_size=40),
           st.integers(min_value=1, max_value=9), st.integers(min_value=1, max_value=9))
    def test_roundtrip(self, parts: list[bytes], out_chunk: int, in_chunk: int) -> None:
        """unstuff(stuff(x)) == x for any CRLF message under any chunking on both sides."""
        msg = b"".join(parts)
        msg = msg + b"\r\n" if msg and not msg.endswith(b"\r\n") else msg
        msg = msg.replace(b"\r\n", b"\x00").replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"\r\n")
        wire = stuff_all(msg, chunk=out_chunk)
        dec, body, rest = decode([wire[i : i + in_chunk] for i in range(0, len(wire), in_chunk)])
        self.assertEqual(body, msg)
        self.assertFalse(dec.bare_newline)


# --------------------------------------------------------------------------- properties (issue 12: fuzzing as a test suite)

# Bytes that matter to the framers, mixed with arbitrary ones, so examples reach every branch.
WIRE_BYTES = st.lists(st.one_of(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"\r\n.\r\n", b"\r\n.", b"NOOP",
                                                 b"x" * 900, b"y" * 3000]),
                                st.binary(max_size=64)), max_size=30).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` split at the (sorted, deduplicated) offsets in `cuts`."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def frame(chunks: list[bytes], limit: int) -> tuple[list[object], int]:
    """All framer events for `chunks` (up to a Flood) and the most it ever held after draining."""
    f = CommandFramer(limit=limit)
    got: list[object] = []
    held = 0
    for c in chunks:
        f.feed(c)
        got += events(f)
        held = max(held, f.buffered)
        if got and isinstance(got[-1], Flood):
            break
    return got, held


class FramerProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=2000)
    @given(WIRE_BYTES, st.lists(st.integers(min_value=0), max_size=12), st.sampled_from([16, 512, 2048]))
    def test_any_bytes_any_chunking(self, data: bytes, cuts: list[int], limit: int) -> None:
        """Events are the same for every chunking, lines are bounded, and only partial lines stay buffered."""
        whole, _ = frame([data], limit)
        got, held = frame(chunked(data, cuts), limit)
        self.assertEqual(got, whole)
        self.assertLessEqual(held, limit + 1)
        for ev in got:
            self.assertIsInstance(ev, (Line, BareNewline, TooLong, Flood))
            if isinstance(ev, Line):
                self.assertLessEqual(len(ev.data), limit)
                self.assertNotIn(b"\n", ev.data)

    @settings(max_examples=200, deadline=2000)
    @given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=20),
           st.lists(st.integers(min_value=0), max_size=12))
    def test_reference_split(self, lines: list[bytes], cuts: list[int]) -> None:
        """Short CRLF lines come out exactly as sent (a reference split on CRLF)."""
        data = b"".join(line + b"\r\n" for line in lines)
        got, _ = frame(chunked(data, cuts), 2048)
        self.assertEqual(got, [Line(line) for line in lines])

    @settings(max_examples=100, deadline=2000)
    @given(st.integers(min_value=1, max_value=4096))
    def test_flood_bounded(self, step: int) -> None:
        """200 KiB without a line end ends in Flood with never more than the limit buffered."""
        got, held = frame([b"z" * step] * (200 * 1024 // step + 1), 2048)
        self.assertIsInstance(got[-1], Flood)
        self.assertLessEqual(held, 2048 + 1)


def decode_chunks(chunks: list[bytes]) -> tuple[bytes, bytes | None, bool, bool, int]:
    """(body, rest, bare_newline, long_line, most held) of the DataDecoder over `chunks`.

    `rest` is what follows the terminator: the remainder of its chunk and the chunks after it
    (those go to the command framer in the session), or None if the data never ended.
    """
    out: list[bytes] = []
    dec = DataDecoder(out.append)
    rest, held = None, 0
    for i, c in enumerate(chunks):
        rest = dec.feed(c)
        held = max(held, len(dec._buf))
        if rest is not None:
            rest += b"" if dec.bare_newline else b"".join(chunks[i + 1 :])
            break
    return b"".join(out), rest, dec.bare_newline, dec.long_line, held


class DataDecoderProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=2000)
    @given(WIRE_BYTES, st.lists(st.integers(min_value=0), max_size=12))
    def test_any_bytes_any_chunking(self, data: bytes, cuts: list[int]) -> None:
        """Arbitrary bytes: no exception, bounded hold, output no larger than input, and the same verdict per chunking."""
        data += b"\r\n.\r\n"  # so that every example ends (unless a bare CR/LF stops it first)
        body, rest, bare, long_line, held = decode_chunks(chunked(data, cuts))
        w_body, w_rest, w_bare, w_long, _ = decode_chunks([data])
        self.assertLessEqual(held, 4096 + 1)
        self.assertLessEqual(len(body), len(data))
        self.assertEqual(bare, w_bare)
        if not bare:
            self.assertEqual((body, rest, long_line), (w_body, w_rest, w_long))
            assert rest is not None
            self.assertTrue(data.endswith(rest))  # the data ends at the first CRLF.CRLF, never later
            stream = b"\r\n" + data
            self.assertEqual(stream.find(b"\r\n.\r\n"), len(stream) - len(rest) - 5)
        else:
            self.assertEqual(rest, b"")  # the session answers 550 and closes: nothing runs as commands

    @settings(max_examples=300, deadline=2000)
    @given(st.lists(st.binary(max_size=1200).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=25),
           st.lists(st.integers(min_value=0), max_size=10), st.integers(min_value=1, max_value=70000))
    def test_unstuff_stuff_roundtrip(self, lines: list[bytes], cuts: list[int], out_chunk: int) -> None:
        """unstuff(stuff(x)) == x for arbitrary line content (dots, NULs, 8-bit, long lines) and any chunking."""
        msg = b"".join(line + b"\r\n" for line in lines)
        wire = stuff_all(msg, chunk=out_chunk)
        self.assertEqual(wire.count(b"\r\n.\r\n") + wire.startswith(b".\r\n"), 1)
        body, rest, bare, long_line, _ = decode_chunks(chunked(wire + b"NOOP\r\n", cuts))
        self.assertEqual((body, rest, bare), (msg, b"NOOP\r\n", False))
        self.assertEqual(long_line, any(len(line) > 998 for line in lines))


class CommandParseProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=2000)
    @given(st.binary(max_size=300), st.sampled_from(["FROM", "TO"]), st.booleans(), st.booleans())
    def test_only_address_error_escapes(self, line: bytes, keyword: str, allow_empty: bool, utf8: bool) -> None:
        """Any command line parses to a verb, and any argument to a path or an AddressError with a 4xx/5xx reply."""
        cmd = parse_command(line)
        self.assertTrue(cmd.verb == "" or (cmd.verb.isascii() and cmd.verb.isupper()))
        for arg in (cmd.arg, f"{keyword}:<{cmd.arg}>", f"{keyword}:<a@b.example> {cmd.arg}"):
            try:
                path = parse_path(arg, keyword, allow_empty, utf8)
            except AddressError as e:
                self.assertRegex(e.reply(), rb"^[45]\d\d [45]\.\d+\.\d+ [^\r\n]*\r\n$")
            else:
                self.assertLessEqual(len(path.address), 254)
                self.assertFalse(set(path.address) & set("\r\n\x00<> "))
