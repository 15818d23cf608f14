"""FETCH data item grammar (RFC 3501 §6.4.5, §9 fetch-att, section, partial)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mailgw.imap.wire.reader import ASTRING_CHARS, ParseError, Reader

SIMPLE = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
          "BODY", "BODYSTRUCTURE", "UID"}
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
MAX_ITEMS = 100
MAX_PART_DEPTH = 64  # section part numbers (1.2.3...): MIME trees are 20 deep; each FETCHed message walks the path
_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")


@dataclass(frozen=True)
class Section:
    """`1.2.HEADER.FIELDS (From To)`: part path, text specifier and header names."""

    part: tuple[int, ...] = ()
    text: str = ""  # "" | HEADER | HEADER.FIELDS | HEADER.FIELDS.NOT | TEXT | MIME
    fields: tuple[bytes, ...] = ()

    def label(self) -> bytes:
        bits = [b"%d" % p for p in self.part]
        if self.text:
            bits.append(self.text.encode())
        spec = b".".join(bits)
        if self.text.startswith("HEADER.FIELDS"):
            spec += b" (" + b" ".join(_field_label(f) for f in self.fields) + b")"
        return spec


def _field_label(name: bytes) -> bytes:
    if name and all(c in ASTRING_CHARS for c in name):
        return name.upper()
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@dataclass(frozen=True)
class FetchItem:
    """One requested data item; `section` is set for BODY[...] and BODY.PEEK[...]."""

    name: str
    section: Optional[Section] = None
    peek: bool = False
    partial: Optional[tuple[int, int]] = None

    def sets_seen(self) -> bool:
        if self.section is not None:
            return not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")

    def label(self) -> bytes:
        """The item name as it appears in the FETCH response."""
        if self.section is None:
            return self.name.encode()
        lab = b"BODY[" + self.section.label() + b"]"
        if self.partial is not None:
            lab += b"<%d>" % self.partial[0]
        return lab


def parse_items(r: Reader) -> list[FetchItem]:
    """fetch = ... SP ("ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")")."""
    if r.accept(b"("):
        items = [_item(r)]
        while r.accept(b" "):
            items.append(_item(r))
            if len(items) > MAX_ITEMS:
                raise ParseError("Error in IMAP command FETCH: Too many data items")
        r.expect(b")")
        return items
    name = r.take(_NAME_CHARS).upper().decode("ascii")
    if name in MACROS:
        return [FetchItem(n) for n in MACROS[name]]
    r.pos -= len(name)
    return [_item(r)]


def _item(r: Reader) -> FetchItem:
    name = r.take(_NAME_CHARS).upper().decode("ascii")
    if not name:
        raise ParseError()
    if name in ("BODY", "BODY.PEEK") and r.peek() == ord("["):
        section = _section(r)
        partial = _partial(r)
        return FetchItem("BODY[]", section, name == "BODY.PEEK", partial)
    if name in SIMPLE:
        return FetchItem(name)
    raise ParseError("Error in IMAP command FETCH: Unknown parameter " + name[:40])


def _section(r: Reader) -> Section:
    r.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[bytes, ...] = ()
    if r.accept(b"]"):
        return Section()
    while r.peek() in _DIGIT_BYTES:
        part.append(r.number(nz=True))
        if len(part) > MAX_PART_DEPTH:
            raise ParseError("Error in IMAP command FETCH: Invalid section")
        if not r.accept(b"."):
            break
    if r.peek() != ord("]"):
        word = r.take(_NAME_CHARS).upper().decode("ascii")
        if word not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise ParseError("Error in IMAP command FETCH: Invalid section")
        if word == "MIME" and not part:
            raise ParseError("Error in IMAP command FETCH: Invalid section")
        text = word
        if word.startswith("HEADER.FIELDS"):
            r.sp()
            r.expect(b"(")
            names = [r.astring()]
            while r.accept(b" "):
                names.append(r.astring())
            r.expect(b")")
            fields = tuple(names)
    elif part and r.line[r.pos - 1 : r.pos] == b".":
        raise ParseError("Error in IMAP command FETCH: Invalid section")
    r.expect(b"]")
    return Section(tuple(part), text, fields)


def _partial(r: Reader) -> Optional[tuple[int, int]]:
    if not r.accept(b"<"):
        return None
    origin = r.number()
    r.expect(b".")
    count = r.number(nz=True)
    r.expect(b">")
    return (origin, count)


_DIGIT_BYTES = frozenset(b"0123456789")
