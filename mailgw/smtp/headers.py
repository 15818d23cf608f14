"""The message header as the submission policy sees it: collected within a byte limit, From: addresses extracted.

Both run on the reactor at DATA time, on client bytes, so both are linear and recursion-free
(issue 12: a header past the limit was half-checked, so a From: after 256 KiB of junk escaped
send_as; email.utils.getaddresses recursed per comment level and per group).
"""

from __future__ import annotations

import re
from typing import Optional


class HeaderCollector:
    """Collects the header block (up to its blank line) as body chunks stream past, within a byte limit.

    Each chunk is searched only where the blank line can be (its last 3 octets before it plus the
    chunk), so a header sent one line per segment costs O(header), not O(header x lines).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray(b"\r\n")  # a virtual CRLF: a message may start with its blank line
        self._end = -1
        self.done = False

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk of the message; False once the header is known to exceed the limit."""
        start = max(0, len(self._buf) - 3)
        self._buf += chunk
        end = self._buf.find(b"\r\n\r\n", start)
        if end >= 0:
            self.done, self._end = True, end
            del self._buf[end + 4 :]
            # `end` indexes CRLF + header, so it is the header's length up to the CRLF of its last field
            return end <= self.limit
        if len(self._buf) - 3 > self.limit:  # no blank line can end the header within the limit any more
            self.done, self._buf = True, bytearray()
            return False
        return True

    def block(self) -> bytes:
        """The header fields, each CRLF-terminated, then an empty line (or what came, if the message ended first)."""
        if self._end >= 0:
            return bytes(self._buf[2 : self._end + 2]) + b"\r\n"
        return bytes(self._buf[2:])


class FromTooLong(ValueError):
    """The From: fields are longer than MAX_FROM_BYTES: refused rather than checked in part."""


MAX_FROM_BYTES = 16 * 1024  # all From: fields of a message, unfolded; ~300 addresses, more than any real one
_COMMENT_SPECIALS = re.compile(r'[()"\\]')


def strip_comments(text: str) -> str:
    """RFC 5322 §3.2.2 comments (nested, with quoted-pairs, not inside quoted strings) replaced by a space.

    Iterative and linear: email.utils recurses once per nesting level, so `From: ((((…` of a few
    thousand levels raised RecursionError at the end of DATA.
    """
    out: list[str] = []
    depth, quoted, skip_to, last = 0, False, 0, 0
    for m in _COMMENT_SPECIALS.finditer(text):
        pos, ch = m.start(), m.group()
        if pos < skip_to:
            continue  # escaped by the backslash before it
        if ch == "\\":
            skip_to = pos + 2
        elif quoted:
            quoted = ch != '"'
        elif depth == 0:
            if ch == '"':
                quoted = True
            elif ch == "(":
                out.append(text[last:pos] + " ")
                depth = 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                last = pos + 1
    if depth == 0:
        out.append(text[last:])
    return "".join(out)


def header_from_addresses(header_block: bytes) -> Optional[list[str]]:
    """Addresses in the From: header(s) of a raw header block; None if there is no From: at all.

    Linear in the header: folded lines are collected in lists (never `str +=` on a list item,
    which copies the whole field per continuation line). Raises FromTooLong past MAX_FROM_BYTES.
    """
    text = header_block.decode("utf-8", "replace")
    values: list[list[str]] = []
    current: Optional[list[str]] = None  # the From: field being unfolded (RFC 5322 §2.2.3)
    for line in text.split("\r\n"):
        if line == "":
            break
        if line[:1] in (" ", "\t"):
            if current is not None:
                current.append(line)
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "from":
            current = [value]
            values.append(current)
        else:
            current = None
    if not values:
        return None
    joined = ["".join(parts) for parts in values]
    if sum(map(len, joined)) > MAX_FROM_BYTES:
        raise FromTooLong(f"From: fields of {sum(map(len, joined))} characters")
    return [addr for v in joined for addr in from_addresses(v)]


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)(?:"|$)(@?)')
_ANGLE = re.compile(r"<([^>]*)(?:>|$)")
_ESCAPE = re.compile(r"\\(.)")


def from_addresses(value: str) -> list[str]:
    """Every address a reader could take for a sender in one From: value, lower-cased (a superset, never fewer).

    Linear (regexes without nesting; email.utils.getaddresses recursed per group and per comment
    level and raised RecursionError). Angle-addrs count (route stripped); in an element with one,
    any other word with an `@` counts too (`alice@ex <ceo@bank>` is checked for both); an element
    without one is an addr-spec with its spaces removed. Display names in quotes do not count,
    a quoted local part (`"x"@d`) does. Groups (`team: a@b, c@d;`) count their members.
    """
    text = _QUOTED.sub(lambda m: _ESCAPE.sub(r"\1", m.group(1)) + "@" if m.group(2) else " ", strip_comments(value))
    angles: list[str] = []

    def take(m: "re.Match[str]") -> str:
        angles.append(m.group(1).rpartition(":")[2])  # RFC 5322 §4.4 obsolete route `<@a,@b:x@y>`
        return "\x00"

    text = _ANGLE.sub(take, text)
    found: list[str] = []
    pending = iter(angles)
    for element in re.split(r"[,;]", text):
        element = element.rpartition(":")[2]  # a group's display name
        n = element.count("\x00")
        words = element.replace("\x00", " ").split()
        found += [next(pending) for _ in range(n)]
        found += [w for w in words if "@" in w] if n else (["".join(words)] if words else [])
    return [a.strip().lower() for a in found if a.strip()]
