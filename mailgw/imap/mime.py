"""MIME tree of a stored message (offsets only, linear scans, depth-capped): headers, parts, sections.

Tolerates anything: 8-bit headers, missing blank lines, broken boundaries. Nothing here raises on
message content; the worst case is a part treated as text/plain.
"""

from __future__ import annotations

import re
from typing import Optional

MAX_MIME_DEPTH = 20
MAX_PARTS = 10000  # parts in one message tree (Dovecot's max_total_mime_parts, CVE-2020-12100 class)
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # RFC 5322 ftext, then optional WSP, then ':'


def header_end(data: bytes, start: int, end: int) -> int:
    """Offset of the body: just after the first empty line, or `end` if there is none."""
    if data.startswith(b"\r\n", start):
        return start + 2
    if data.startswith(b"\n", start):
        return start + 1
    i = start
    while True:
        j = data.find(b"\n", i, end)
        if j < 0:
            return end
        if data.startswith(b"\r\n", j + 1) and j + 3 <= end:
            return j + 3
        if data.startswith(b"\n", j + 1) and j + 2 <= end:
            return j + 2
        i = j + 1


def parse_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """[(lower-case name, raw value with folding)] of a header block; malformed lines are skipped."""
    fields: list[tuple[bytes, bytes]] = []
    name: Optional[bytes] = None
    value: list[bytes] = []
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            fields.append((name, b"\r\n".join(value)))
            name = None
        m = _FIELD.match(line)
        if m is None:
            continue
        name = m.group(1).lower()
        value = [line[m.end() :]]
    if name is not None:
        fields.append((name, b"\r\n".join(value)))
    return fields


def unfold(raw: bytes) -> bytes:
    """Header value with folding removed and outer whitespace stripped."""
    return raw.replace(b"\r\n", b"").replace(b"\n", b"").strip(b" \t")


def field_lines(block: bytes, names: set[bytes], keep: bool) -> bytes:
    """HEADER.FIELDS / .NOT: the raw lines of matching (keep) or non-matching fields, plus the blank line."""
    out: list[bytes] = []
    current = False
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if current:
                out.append(line + b"\r\n")
            continue
        colon = line.find(b":")
        name = line[:colon].rstrip(b" \t").lower() if colon > 0 else b""
        current = bool(name) and ((name in names) == keep)
        if current:
            out.append(line + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def parse_params(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """`text/plain; charset="utf-8"` -> (b"text/plain", [(b"charset", b"utf-8")]); tolerant, linear."""
    value = unfold(raw)
    head, _, rest = value.partition(b";")
    params: list[tuple[bytes, bytes]] = []
    i, n = 0, len(rest)
    while i < n and len(params) < 64:
        while i < n and rest[i] in b" \t;":
            i += 1
        eq = rest.find(b"=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in b" \t":
            i += 1
        if i < n and rest[i] == 0x22:
            buf = bytearray()
            i += 1
            while i < n and rest[i] != 0x22:
                if rest[i] == 0x5C and i + 1 < n:
                    i += 1
                buf.append(rest[i])
                i += 1
            i += 1
            val = bytes(buf)
        else:
            semi = rest.find(b";", i)
            semi = n if semi < 0 else semi
            val = rest[i:semi].strip()
            i = semi
        if key:
            params.append((key, val))
    return head.strip().lower(), params


class Part:
    """One MIME entity: [start, body_start) is its header, [body_start, end) its body."""

    __slots__ = ("data", "start", "body_start", "end", "fields", "maintype", "subtype", "params",
                 "children", "message", "depth", "budget")

    def __init__(self, data: bytes, start: int, end: int, depth: int = 0, digest: bool = False,
                 budget: Optional[list[int]] = None) -> None:
        # parts left for the whole tree: a message of 1,000,000 tiny parts costs as much as 10,000
        self.budget = budget if budget is not None else [MAX_PARTS]
        self.budget[0] -= 1
        self.data = data
        self.start = start
        self.end = end
        self.depth = depth
        self.body_start = header_end(data, start, end)
        self.fields = parse_fields(data[start : self.body_start])
        self.children: list[Part] = []
        self.message: Optional[Part] = None
        ctype = self.field(b"content-type")
        full, self.params = parse_params(ctype) if ctype is not None else (b"", [])
        main, _, sub = full.partition(b"/")
        if not main or not sub or not _token(main) or not _token(sub):
            main, sub = (b"message", b"rfc822") if digest else (b"text", b"plain")
            if ctype is None or not full:
                self.params = [] if digest else [(b"charset", b"us-ascii")]
        self.maintype, self.subtype = main, sub
        if depth < MAX_MIME_DEPTH and self.budget[0] > 0:
            if main == b"multipart":
                self._split(self.param(b"boundary"), sub == b"digest")
            elif main == b"message" and sub == b"rfc822":
                self.message = Part(data, self.body_start, end, depth + 1, budget=self.budget)

    def field(self, name: bytes) -> Optional[bytes]:
        for n, v in self.fields:
            if n == name:
                return v
        return None

    def param(self, name: bytes) -> Optional[bytes]:
        for n, v in self.params:
            if n == name:
                return v
        return None

    @property
    def header(self) -> bytes:
        return self.data[self.start : self.body_start]

    @property
    def body(self) -> bytes:
        return self.data[self.body_start : self.end]

    def is_multipart(self) -> bool:
        return self.maintype == b"multipart"

    def _split(self, boundary: Optional[bytes], digest: bool) -> None:
        data, end = self.data, self.end
        spans: list[tuple[int, int]] = []
        if boundary:
            delim = b"--" + boundary
            i = self.body_start
            content_start: Optional[int] = None
            while len(spans) < MAX_PARTS:  # each turn moves i past j (j >= i): linear in the body
                j = data.find(delim, i, end)
                if j < 0:
                    break
                k = j + len(delim)
                if (j != self.body_start and data[j - 1] != 0x0A) or (k < end and data[k] not in b"-\r\n \t"):
                    i = j + 1
                    continue
                close = data.startswith(b"--", k)
                le = data.find(b"\n", k, end)
                le = end if le < 0 else le + 1
                if content_start is not None:
                    stop = j
                    if stop > content_start and data[stop - 1] == 0x0A:
                        stop -= 1
                        if stop > content_start and data[stop - 1] == 0x0D:
                            stop -= 1
                    spans.append((content_start, max(stop, content_start)))
                content_start = le
                if close:
                    content_start = None
                    break
                i = le
            if content_start is not None:
                spans.append((content_start, end))
        for a, b in spans:
            if self.budget[0] <= 0:
                break  # the rest of the body is not split further (Dovecot does the same past its limit)
            self.children.append(Part(data, a, b, self.depth + 1, digest, self.budget))
        if not self.children:
            self.children.append(Part(b"\r\n", 0, 2, self.depth + 1, budget=self.budget))


def _token(value: bytes) -> bool:
    return all(0x20 < c < 0x7F and c not in b'()<>@,;:\\"/[]?=' for c in value)


def parse_message(data: bytes) -> Part:
    return Part(data, 0, len(data))


def find_part(root: Part, path: tuple[int, ...]) -> Optional[Part]:
    """Part `1.2.3` (RFC 3501 §6.4.5): descends multiparts and encapsulated messages."""
    node = root
    for idx, n in enumerate(path):
        if idx > 0 and node.message is not None:
            node = node.message
        if node.is_multipart():
            if n > len(node.children):
                return None
            node = node.children[n - 1]
        elif n != 1:
            return None
    return node


def section_bytes(root: Part, part: tuple[int, ...], text: str, fields: tuple[bytes, ...]) -> Optional[bytes]:
    """The octets of BODY[part.text]; None when the part does not exist."""
    node = find_part(root, part) if part else root
    if node is None:
        return None
    if not text:
        return node.data[node.start : node.end] if not part else node.body
    if text == "MIME":
        return node.header
    msg = node if not part else node.message
    if msg is None:
        return b""
    if text == "HEADER":
        return msg.header
    if text == "TEXT":
        return msg.body
    names = {f.lower() for f in fields}
    return field_lines(msg.header, names, text == "HEADER.FIELDS")


def body_lines(body: bytes) -> int:
    if not body:
        return 0
    n = body.count(b"\n")
    return n if body.endswith(b"\n") else n + 1
