"""The presented form of a meeting request: the stored message inside a multipart/mixed wrapper.

    <stored header, Content-Type replaced by multipart/mixed, MIME-Version: 1.0 ensured>
    --B-m
    Content-Type: multipart/alternative  (the summary: text/plain, text/html, quoted-printable)
    --B-m
    <the stored Content-* fields (RFC 2045 §9: they describe the body)>
    <the stored body, byte for byte>
    --B-m--

so calendar-aware clients still find the text/calendar part, one level down. A `Recipe` is the
(small) difference: the new head replacing the stored header, and the closing tail; presented =
head + stored[head_len:] + tail, so sizes and byte ranges follow from the stored size alone.
Only the first EXAMINE octets are parsed (a 30 MB attachment after the invitation is not read).
"""

from __future__ import annotations

import hashlib
import quopri
import re
from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet.defer import ensureDeferred
from zope.interface import implementer

from mailgw.imap.calendaring.detect import calendar_parts, meeting_of
from mailgw.imap.calendaring.link import CalendarSettings, Where, link
from mailgw.imap.calendaring.render import html_text, plain_text
from mailgw.imap.mime import Part, parse_params
from mailgw.interfaces import IMessageBody

EXAMINE = 512 * 1024  # octets of a message parsed to decide (the header and the first parts)
MAX_PARTS = 64
# RFC 2045 §9: the fields that describe the body move with it into the second part
MOVED = frozenset({b"content-type", b"content-transfer-encoding", b"content-disposition", b"content-id",
                   b"content-description", b"content-md5"})
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_STRICT_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")  # RFC 5322 §2.2 without the obsolete WSP before ':'


@dataclass(frozen=True)
class Recipe:
    """How to present one stored message: head + stored[head_len:] + tail."""

    head_len: int  # length of the stored header block (blank line included)
    head: bytes  # the new header block, the summary part and the second part's header
    header_len: int  # length of the new header block within `head`
    tail: bytes

    @property
    def header(self) -> bytes:
        return self.head[: self.header_len]

    def size(self, stored_size: int) -> int:
        return stored_size - self.head_len + len(self.head) + len(self.tail)

    def apply(self, stored: bytes) -> bytes:
        return self.head + stored[self.head_len :] + self.tail

    @property
    def weight(self) -> int:
        return len(self.head) + len(self.tail) + 64


def is_candidate(header: bytes) -> bool:
    """Could this header's message be a meeting request? Multipart, text/calendar or application/ics at top.

    The cheap rule that decides when fast_message_retrieval must open a file: anything else keeps
    the index's size and header.
    """
    for line in _fields(header):
        m = _FIELD.match(line)
        if m is not None and m.group(1).lower() == b"content-type":
            kind = parse_params(line[m.end():])[0]
            return kind.startswith(b"multipart/") or kind in (b"text/calendar", b"application/ics")
    return False


def present(stored: bytes, settings: CalendarSettings, where: Where) -> Optional[bytes]:
    """The presented message, or None when it is left as stored (not a meeting request, or malformed)."""
    recipe = plan(stored, settings, where)
    return None if recipe is None else recipe.apply(stored)


def plan(data: bytes, settings: CalendarSettings, where: Where) -> Optional[Recipe]:
    """The recipe for a message from its stored bytes or at least its first EXAMINE + 1 octets; never raises."""
    try:
        return _plan(data[: EXAMINE + 1], settings, where)
    except Exception:  # a bug here must show the message as stored, never fail the FETCH
        return None


def _plan(data: bytes, settings: CalendarSettings, where: Where) -> Optional[Recipe]:
    truncated = len(data) > EXAMINE
    data = data[:EXAMINE]
    root = Part(data, 0, len(data), budget=[MAX_PARTS])
    if root.body_start >= len(data) and truncated:
        return None  # a header longer than EXAMINE: not a message any client sends
    header = data[: root.body_start]
    if not is_candidate(header) or not _well_formed(header):
        return None
    meeting = None
    for part in calendar_parts(root, truncated):
        meeting = meeting_of(part)
        if meeting is not None:
            break
    if meeting is None:
        return None
    eol = b"\r\n" if header.endswith(b"\r\n") else b"\n"
    seed = hashlib.sha256(data + settings.fingerprint.encode() + repr(where).encode()).hexdigest()[:32]
    outer, inner = f"=_mailgw-cal-{seed}-m".encode(), f"=_mailgw-cal-{seed}-a".encode()
    if outer in data or inner in data:
        return None  # cannot happen short of a SHA-256 collision; never produce an ambiguous structure
    kept, moved, cte = _split_header(header, eol)
    url = link(settings, where, meeting.uid)
    top = kept[0] + b"Content-Type: multipart/mixed; boundary=\"" + outer + b"\"" + eol + kept[1]
    if cte in (b"8bit", b"binary"):
        top += b"Content-Transfer-Encoding: " + cte + eol  # RFC 2045 §6.4: a multipart may say 8bit/binary
    top += eol
    pieces = [top, b"--" + outer + eol,
              b"Content-Type: multipart/alternative; boundary=\"" + inner + b"\"" + eol, eol,
              _text_part(inner, b"plain", plain_text(meeting, url), eol),
              _text_part(inner, b"html", html_text(meeting, url), eol),
              b"--" + inner + b"--" + eol,
              b"--" + outer + eol, b"".join(moved), eol]
    return Recipe(head_len=len(header), head=b"".join(pieces), header_len=len(top),
                  tail=eol + b"--" + outer + b"--" + eol)


def _well_formed(header: bytes) -> bool:
    """Every line a field or a continuation, no bare CR, no blank continuation: where parsers agree.

    A message outside this (hostile or broken) is left as stored rather than wrapped into
    something two MIME parsers would read differently.
    """
    if not header.endswith(b"\n") or b"\r" in header.replace(b"\r\n", b"") or b"\0" in header:
        return False
    lines = header.split(b"\n")[:-2]  # the last two: the blank line and what follows its newline
    return all(_STRICT_FIELD.match(c) for c in _fields(header)) and all(line.strip() for line in lines)


def _text_part(boundary: bytes, subtype: bytes, text: str, eol: bytes) -> bytes:
    body = quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8")).replace(b"\n", eol)
    return (b"--" + boundary + eol + b"Content-Type: text/" + subtype + b"; charset=\"utf-8\"" + eol
            + b"Content-Transfer-Encoding: quoted-printable" + eol + eol + body + eol)


def _fields(header: bytes) -> list[bytes]:
    """The header's fields as raw chunks (continuation lines included, line ends kept), blank line dropped."""
    chunks: list[bytes] = []
    start = 0
    while start < len(header):
        end = header.find(b"\n", start)
        end = len(header) if end < 0 else end + 1
        line = header[start:end]
        start = end
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and chunks:
            chunks[-1] += line
        else:
            chunks.append(line)
    return chunks


def _split_header(header: bytes, eol: bytes) -> tuple[tuple[bytes, bytes], list[bytes], bytes]:
    """((fields before the first Content-Type, fields after it), the moved fields, the stored CTE)."""
    before: list[bytes] = []
    after: list[bytes] = []
    moved: list[bytes] = []
    cte = b""
    has_version = seen_type = False
    for chunk in _fields(header):
        m = _FIELD.match(chunk)
        name = m.group(1).lower() if m else b""
        if name in MOVED:
            seen_type = seen_type or name == b"content-type"
            if name == b"content-transfer-encoding" and not cte:
                cte = chunk[m.end():].strip().lower()  # type: ignore[union-attr]
            moved.append(chunk if chunk.endswith(b"\n") else chunk + eol)
            continue
        has_version = has_version or name == b"mime-version"
        (after if seen_type else before).append(chunk)
    head = b"".join(before)
    if not has_version:
        head += b"MIME-Version: 1.0" + eol
    return (head, b"".join(after)), moved, cte


@implementer(IMessageBody)
class PresentedBody:
    """The presented message over a stored IMessageBody (mailgw.interfaces): reads stay in the store's pool.

    Offsets are the presented ones: [0, len(head)) is the recipe's head, then the stored message
    after its header block, then the tail; so partial FETCHes and streaming of big bodies work
    unchanged on top of it.
    """

    def __init__(self, stored: Any, recipe: Recipe) -> None:
        self.stored, self.recipe = stored, recipe
        self.size = recipe.size(stored.size)

    def read(self, offset: int, length: int) -> Any:
        return ensureDeferred(self._read(offset, length))

    async def _read(self, offset: int, length: int) -> bytes:
        r, head = self.recipe, self.recipe.head
        end = min(self.size, offset + max(0, length))
        middle_end = len(head) + self.stored.size - r.head_len
        out = []
        pos = offset
        while pos < end:
            if pos < len(head):
                piece = head[pos:end]
            elif pos < middle_end:
                piece = await self.stored.read(r.head_len + pos - len(head), min(end, middle_end) - pos)
                if not piece:
                    break
            else:
                piece = r.tail[pos - middle_end : end - middle_end]
            out.append(piece)
            pos += len(piece)
        return b"".join(out)

    def read_all(self) -> Any:
        return self.read(0, self.size)

    def close(self) -> None:
        self.stored.close()
