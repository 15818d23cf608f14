"""Token reader over one framed command: atoms, numbers, quoted strings, literals (RFC 3501 §9)."""

from __future__ import annotations

from typing import Optional, Union

from mailgw.imap.wire.framing import Command, SpooledLiteral, literal_announcement

MAX_DEPTH = 64

# ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]"
ATOM_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in b'(){ %*"\\]')
# 8-bit bytes are tolerated in astrings: imaplib sends `SEARCH CHARSET UTF-8 SUBJECT café` unquoted
ASTRING_CHARS = ATOM_CHARS | {ord("]")} | set(range(0x80, 0x100))
LIST_CHARS = ATOM_CHARS | {ord("%"), ord("*"), ord("]")}
TAG_CHARS = (ATOM_CHARS | {ord("]")}) - {ord("+")}


class ParseError(ValueError):
    """The client's command does not parse; `text` is the BAD response text."""

    def __init__(self, text: str = "Error in IMAP command received by server.") -> None:
        self.text = text
        super().__init__(text)


LiteralValue = Union[bytes, SpooledLiteral]


class Reader:
    """A cursor over `lines` with `literals` spliced in where each line's `{n}` announcement was."""

    def __init__(self, cmd: Command) -> None:
        self.lines: list[bytes] = []
        for i, line in enumerate(cmd.lines):
            if i < len(cmd.lines) - 1:
                ann = literal_announcement(line)
                line = line[: ann[2]] if ann else line
            self.lines.append(line)
        self.literals = cmd.literals
        self.seg = 0
        self.pos = 0

    # ------------------------------------------------------------------ position
    @property
    def line(self) -> bytes:
        return self.lines[self.seg]

    def at_literal(self) -> bool:
        return self.pos >= len(self.line) and self.seg < len(self.lines) - 1

    def at_end(self) -> bool:
        return self.seg == len(self.lines) - 1 and self.pos >= len(self.line)

    def peek(self) -> int:
        """Next byte, or -1 at a literal or the end."""
        if self.pos < len(self.line):
            return self.line[self.pos]
        return -1

    def expect(self, ch: bytes) -> None:
        if self.peek() != ch[0]:
            raise ParseError()
        self.pos += 1

    def accept(self, ch: bytes) -> bool:
        if self.peek() == ch[0]:
            self.pos += 1
            return True
        return False

    def sp(self) -> None:
        self.expect(b" ")

    def end(self) -> None:
        if not self.at_end():
            raise ParseError()

    # ------------------------------------------------------------------ tokens
    def take(self, allowed: frozenset[int]) -> bytes:
        line, start = self.line, self.pos
        end = start
        n = len(line)
        while end < n and line[end] in allowed:
            end += 1
        self.pos = end
        return line[start:end]

    def atom(self) -> bytes:
        tok = self.take(ATOM_CHARS)
        if not tok:
            raise ParseError()
        return tok

    def keyword(self) -> str:
        """An atom, upper-cased (command names, fetch/search keys)."""
        return self.atom().upper().decode("ascii")

    def number(self, nz: bool = False) -> int:
        tok = self.take(_DIGITS)
        if not tok or len(tok) > 10:
            raise ParseError()
        value = int(tok)
        if value > 4294967295 or (nz and value == 0):
            raise ParseError()
        return value

    def literal(self) -> LiteralValue:
        if not self.at_literal():
            raise ParseError()
        value = self.literals[self.seg]
        self.seg += 1
        self.pos = 0
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        line = self.line
        out = bytearray()
        i = self.pos
        n = len(line)
        while True:
            if i >= n:
                raise ParseError()
            c = line[i]
            if c == 0x22:
                break
            if c == 0x5C:
                i += 1
                if i >= n or line[i] not in b'"\\':
                    raise ParseError()
                c = line[i]
            elif c == 0:
                raise ParseError("NULs not allowed in strings")
            out.append(c)
            i += 1
        self.pos = i + 1
        return bytes(out)

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        lit = self.literal()
        data = lit if isinstance(lit, bytes) else lit.to_bytes()
        if b"\x00" in data:
            raise ParseError("NULs not allowed in strings")
        return data

    def astring(self) -> bytes:
        if self.peek() == 0x22 or self.at_literal():
            return self.string()
        tok = self.take(ASTRING_CHARS)
        if not tok:
            raise ParseError()
        return tok

    def nstring(self) -> Optional[bytes]:
        if self.peek() in (ord("N"), ord("n")) and self.line[self.pos : self.pos + 3].upper() == b"NIL":
            self.pos += 3
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        if self.peek() == 0x22 or self.at_literal():
            return self.string()
        tok = self.take(LIST_CHARS)
        if not tok:
            raise ParseError()
        return tok

    def rest(self) -> bytes:
        """The remainder of the current line (for base64 responses)."""
        data = self.line[self.pos :]
        self.pos = len(self.line)
        return data


_DIGITS = frozenset(b"0123456789")


def parse_tag(cmd: Command) -> Optional[bytes]:
    """The tag of a command, or None when it is missing or invalid (`*`, `+`, specials)."""
    first = cmd.lines[0]
    sp = first.find(b" ")
    tag = first if sp < 0 else first[:sp]
    if not tag or any(c not in TAG_CHARS for c in tag):
        return None
    return tag


def tag_of_lines(lines: list[bytes]) -> Optional[bytes]:
    return parse_tag(Command(lines[:1]))
