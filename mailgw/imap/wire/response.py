"""IMAP response serialiser: Python values -> response bytes (RFC 3501 §7, §9 formal syntax)."""

from __future__ import annotations

import re
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


_UNQUOTABLE = re.compile(rb"[^\x20-\x7e]")


def _quotable(data: bytes) -> bool:
    return len(data) <= _QUOTED_LIMIT and _UNQUOTABLE.search(data) is None


def string(data: bytes) -> bytes:
    """A string as quoted (when safe) or as a literal."""
    if len(data) <= _QUOTED_LIMIT and _UNQUOTABLE.search(data) is None:
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + data + b'"'
    return b"{%d}\r\n" % len(data) + data


def astring(data: bytes) -> bytes:
    """An astring: atom when the bytes are atom-safe, else a string (used for mailbox names)."""
    if data and all(c in _ASTRING_CHARS for c in data):
        return data
    return string(data)


def encode(value: Value) -> bytes:
    """Serialise one value (nesting is bounded by what mailgw builds: MIME depth is capped)."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(item: Value, out: list[bytes], depth: int) -> None:
    if item is None:
        out.append(b"NIL")
    elif isinstance(item, bytes):
        out.append(string(item))
    elif isinstance(item, list) or isinstance(item, tuple):
        if depth > 200:
            raise ValueError("value nested too deeply")
        out.append(b"(")
        first = True
        for sub in item:
            if not first:
                out.append(b" ")
            first = False
            _encode(sub, out, depth + 1)
        out.append(b")")
    elif isinstance(item, bool):
        out.append(b"1" if item else b"0")
    elif isinstance(item, int):
        out.append(b"%d" % item)
    elif isinstance(item, Atom):
        out.append(item.value)
    elif isinstance(item, Literal):
        out.append(b"{%d}\r\n" % len(item.value))
        out.append(item.value)
    elif isinstance(item, Quoted):
        out.append(string(item.value))
    elif isinstance(item, str):
        out.append(string(item.encode("utf-8")))
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
