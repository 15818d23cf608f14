"""IMAP response serialiser: Python values -> response bytes (RFC 3501 §7, §9 formal syntax)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Union

_QUOTED_LIMIT = 256  # longer strings go out as literals


@dataclass(frozen=True)
class Atom:
    """Sent verbatim (flags, keywords, numbers-as-text, response codes)."""

    value: bytes


@dataclass(frozen=True)
class Literal:
    """Always sent as a literal `{n}\\r\\n...` (bodies, 8-bit data)."""

    value: bytes


@dataclass(frozen=True)
class Quoted:
    """A string that should be quoted if it can be (falls back to a literal)."""

    value: bytes


Value = Union[None, int, bytes, str, Atom, Literal, Quoted, "list[Value]", "tuple[Value, ...]"]

NIL = Atom(b"NIL")


def _quotable(data: bytes) -> bool:
    if len(data) > _QUOTED_LIMIT:
        return False
    for c in data:
        if c < 0x20 or c > 0x7E:
            return False
    return True


def string(data: bytes) -> bytes:
    """A string as quoted (when safe) or as a literal."""
    if _quotable(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def astring(data: bytes) -> bytes:
    """An astring: atom when the bytes are atom-safe, else a string (used for mailbox names)."""
    if data and all(c in _ASTRING_CHARS for c in data):
        return data
    return string(data)


def encode(value: Value) -> bytes:
    """Serialise one value."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    # iterative over lists so that deep nesting cannot overflow the stack
    stack: list[tuple[object, int]] = [(value, -1)]
    while stack:
        item, idx = stack.pop()
        if idx >= 0:
            seq = item  # type: ignore[assignment]
            assert isinstance(seq, (list, tuple))
            if idx >= len(seq):
                out.append(b")")
                continue
            if idx > 0:
                out.append(b" ")
            stack.append((seq, idx + 1))
            stack.append((seq[idx], -1))
            continue
        if item is None:
            out.append(b"NIL")
        elif isinstance(item, bool):
            out.append(b"1" if item else b"0")
        elif isinstance(item, int):
            out.append(b"%d" % item)
        elif isinstance(item, Atom):
            out.append(item.value)
        elif isinstance(item, Literal):
            out.append(b"{%d}\r\n" % len(item.value) + item.value)
        elif isinstance(item, Quoted):
            out.append(string(item.value))
        elif isinstance(item, bytes):
            out.append(string(item))
        elif isinstance(item, str):
            out.append(string(item.encode("utf-8")))
        elif isinstance(item, (list, tuple)):
            out.append(b"(")
            stack.append((item, 0))
        else:
            raise TypeError(f"cannot serialise {type(item).__name__}")


def untagged(*parts: bytes) -> bytes:
    """`* part part ...\\r\\n`."""
    return b"* " + b" ".join(parts) + b"\r\n"


def tagged(tag: bytes, status: bytes, text: bytes, code: bytes = b"") -> bytes:
    """`tag OK [CODE] text\\r\\n`."""
    if code:
        return b"%s %s [%s] %s\r\n" % (tag, status, code, text)
    return b"%s %s %s\r\n" % (tag, status, text)


def flag_list(flags: Iterable[str]) -> bytes:
    """`(\\Seen \\Answered kw)`, system flags first in a stable order."""
    return b"(" + b" ".join(f.encode("ascii", "replace") for f in sort_flags(flags)) + b")"


_SYSTEM_ORDER = {"\\Answered": 0, "\\Flagged": 1, "\\Deleted": 2, "\\Seen": 3, "\\Draft": 4, "\\Recent": 5}


def sort_flags(flags: Iterable[str]) -> list[str]:
    """System flags in RFC order, then keywords alphabetically."""
    return sorted(flags, key=lambda f: (_SYSTEM_ORDER.get(f, 9), f.lower()))


_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def internal_date(when: datetime) -> bytes:
    """`"17-Jul-1996 02:44:25 -0700"` (RFC 3501 date-time)."""
    off = when.utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return b'"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        when.day, _MONTHS[when.month - 1], when.year, when.hour, when.minute, when.second,
        sign, minutes // 60, minutes % 60,
    )


_ASTRING_CHARS = frozenset(
    c for c in range(0x21, 0x7F) if c not in b'(){ %*"\\'
)
