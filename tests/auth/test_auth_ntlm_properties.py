"""Property tests of the NTLM codec: any bytes, and any mutation of a valid Type 1 or Type 3, give a value or NTLMMalformed.

Each parse also terminates fast and returns nothing larger than its input (MS-NLMP 2.2; the
Exim CVE-2023-42114/-42115/-42116 class: lengths and offsets trusted from the message).
"""

from __future__ import annotations

import struct
import time
from datetime import timedelta
from typing import Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailgw.auth import ntlm_wire as w

PER_PARSE = 0.25  # seconds; a parse is O(len) over at most MAX_MESSAGE bytes, microseconds in practice
SETTINGS = settings(deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])


def type1(flags: int) -> bytes:
    return w.SIGNATURE + struct.pack("<II", 1, flags) + b"\0" * 16


def type3(lm: bytes, nt: bytes, domain: bytes, user: bytes, workstation: bytes, key: bytes, flags: int,
          mic: bool) -> bytes:
    """A well-formed AUTHENTICATE_MESSAGE: header, Version and MIC if asked, then the payload buffers in order."""
    start = 64 + (24 if mic else 0)
    fields, payload = b"", b""
    for value in (lm, nt, domain, user, workstation, key):
        fields += struct.pack("<HHI", len(value), len(value), start + len(payload))
        payload += value
    tail = (w.VERSION + b"M" * 16) if mic else b""
    return w.SIGNATURE + struct.pack("<I", 3) + fields + struct.pack("<I", flags) + tail + payload


def timed(parse: Callable[[], object]) -> object:
    """Run one parse; NTLMMalformed is an answer; anything else escapes and fails the property."""
    started = time.perf_counter()
    try:
        return parse()
    except w.NTLMMalformed as exc:
        assert exc.field, "NTLMMalformed names the field"
        return exc
    finally:
        assert time.perf_counter() - started < PER_PARSE


def parse_all(data: bytes) -> None:
    for unicode in (True, False):
        result = timed(lambda: w.parse_authenticate(data, unicode))
        if isinstance(result, w.Authenticate):
            parts = (result.lm_response, result.nt_response, result.session_key)
            assert sum(map(len, parts)) <= len(data)
            assert result.mic is None or len(result.mic) == 16
    result = timed(lambda: w.parse_negotiate(data))
    assert isinstance(result, (w.Negotiate, w.NTLMMalformed))
    pairs = timed(lambda: w.parse_av_pairs(data))
    if isinstance(pairs, dict):
        assert sum(len(v) for v in pairs.values()) <= len(data)


utf16 = st.text(max_size=40).map(lambda s: s.encode("utf-16-le", "surrogatepass"))
blob = st.binary(max_size=200)
valid_type3 = st.builds(type3, blob, blob, utf16, utf16, utf16, st.binary(max_size=16),
                        st.integers(0, 2**32 - 1), st.booleans())
valid_type1 = st.integers(0, 2**32 - 1).map(type1)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A valid message with a few edits: flipped bytes, overwritten length/offset fields, cuts, growth, splices."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "u16", "u32", "truncate", "extend", "splice"]))
        if kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif kind == "splice" and data:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            # Header fields live at 8..72: aim most edits there, where lengths and offsets are.
            at = draw(st.one_of(st.integers(8, 71), st.integers(0, len(data) - 1)))
            at = min(at, len(data) - 1)
            if kind == "flip":
                data[at] ^= draw(st.integers(1, 255))
            else:
                size = 2 if kind == "u16" else 4
                value = draw(st.one_of(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 2**31 - 1, 2**32 - 1, 64, 72, 88]),
                                       st.integers(0, 2 ** (8 * size) - 1)))
                data[at:at + size] = struct.pack("<H" if size == 2 else "<I", value & (2 ** (8 * size) - 1))
    return bytes(data)


class NTLMCodecProperties(SynchronousTestCase):
    @SETTINGS
    @given(st.binary(max_size=w.MAX_MESSAGE + 64))
    @example(b"NTLMSSP\0\x03\0\0\0" + b"\xff" * 60)
    @example(b"NTLMSSP\0\x03\0\0\0" + b"\0" * 52 + b"\xff\xff\xff\xff")
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Arbitrary bytes (any size up to past MAX_MESSAGE) parse or raise NTLMMalformed, quickly."""
        parse_all(data)

    @SETTINGS
    @given(st.binary(max_size=400).map(lambda b: b"NTLMSSP\0\x03\0\0\0" + b))
    def test_arbitrary_type3_body(self, data: bytes) -> None:
        """Past a valid signature and type, any header and payload bytes parse or raise NTLMMalformed."""
        parse_all(data)

    @SETTINGS
    @given(mutated(st.one_of(valid_type3, valid_type1)))
    def test_mutated_valid_messages(self, data: bytes) -> None:
        """Edited valid Type 1 and Type 3 messages (lengths, offsets, cuts, splices) parse or raise NTLMMalformed."""
        parse_all(data)

    @SETTINGS
    @given(blob, blob, st.text(max_size=40), st.text(max_size=40), st.text(max_size=40), st.binary(max_size=16),
           st.integers(0, 2**32 - 1), st.booleans())
    def test_valid_type3_round_trips(self, lm: bytes, nt: bytes, domain: str, user: str, workstation: str,
                                     key: bytes, flags: int, mic: bool) -> None:
        """A well-formed Type 3 parses back to exactly its fields (the parser refuses nothing valid)."""
        enc = [s.encode("utf-16-le", "surrogatepass") for s in (domain, user, workstation)]
        message = type3(lm, nt, *enc, key, flags, mic)
        if len(message) > w.MAX_MESSAGE:
            return
        try:
            expected = tuple(e.decode("utf-16-le") for e in enc)
        except UnicodeDecodeError:  # lone surrogates: not valid UTF-16, so refused by name
            self.assertIsInstance(timed(lambda: w.parse_authenticate(message, True)), w.NTLMMalformed)
            return
        parsed = w.parse_authenticate(message, True)
        self.assertEqual((parsed.lm_response, parsed.nt_response, parsed.session_key, parsed.flags), (lm, nt, key, flags))
        self.assertEqual((parsed.domain, parsed.user, parsed.workstation), expected)
        self.assertEqual(parsed.mic, b"M" * 16 if mic else None)
        self.assertEqual(w.parse_negotiate(type1(flags)).flags, flags)

    @SETTINGS
    @given(st.integers(0, 2**32 - 1))
    def test_challenge_flags(self, flags: int) -> None:
        """Any Type 1 flags give Type 2 flags with exactly one charset, or NTLMMalformed('charset') when none is offered."""
        result = timed(lambda: w.challenge_flags(flags))
        if isinstance(result, w.NTLMMalformed):
            self.assertEqual(result.field, "charset")
            self.assertFalse(flags & (w.NEGOTIATE_UNICODE | w.NEGOTIATE_OEM))
        else:
            assert isinstance(result, int)
            self.assertEqual(bin(result & (w.NEGOTIATE_UNICODE | w.NEGOTIATE_OEM)).count("1"), 1)
            self.assertFalse(result & w.NEGOTIATE_LM_KEY)
