"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3): strict decoding and canonical encoding."""

from __future__ import annotations

import base64
import binascii


class MUTF7Error(ValueError):
    """The name is not valid (canonical) modified UTF-7."""


def _b64_encode(text: str) -> bytes:
    raw = text.encode("utf-16-be")
    return base64.b64encode(raw).rstrip(b"=").replace(b"/", b",")


def encode(name: str) -> bytes:
    """Unicode name -> modified UTF-7 bytes (printable ASCII stays as is, '&' becomes '&-')."""
    out = bytearray()
    run: list[str] = []

    def flush() -> None:
        if run:
            out.extend(b"&" + _b64_encode("".join(run)) + b"-")
            run.clear()

    for ch in name:
        code = ord(ch)
        if 0x20 <= code <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            run.append(ch)
    flush()
    return bytes(out)


def decode(data: bytes) -> str:
    """Modified UTF-7 bytes -> Unicode; raises MUTF7Error unless the input is canonical."""
    out: list[str] = []
    i = 0
    n = len(data)
    last_was_encoded = False
    while i < n:
        c = data[i]
        if c < 0x20 or c > 0x7E:
            raise MUTF7Error("8-bit or control character")
        if c != 0x26:  # '&'
            out.append(chr(c))
            i += 1
            last_was_encoded = False
            continue
        end = data.find(b"-", i + 1)
        if end < 0:
            raise MUTF7Error("unterminated shift sequence")
        chunk = data[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            last_was_encoded = False
            continue
        if last_was_encoded:
            raise MUTF7Error("adjacent encoded sequences")
        if any(b not in _B64_CHARS for b in chunk):
            raise MUTF7Error("invalid base64 character")
        padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise MUTF7Error("invalid base64") from e
        if len(raw) % 2:
            raise MUTF7Error("odd UTF-16 length")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError as e:
            raise MUTF7Error("invalid UTF-16") from e
        if any(0x20 <= ord(ch) <= 0x7E for ch in text):
            raise MUTF7Error("encoded printable ASCII")
        if _b64_encode(text) != chunk:
            raise MUTF7Error("non-canonical base64")
        out.append(text)
        last_was_encoded = True
    return "".join(out)


_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
