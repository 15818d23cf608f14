"""SEARCH evaluation (RFC 3501 §6.4.4) of a parsed key tree against one message at a time.

Flags, sizes, dates and sets come from the index; headers and bodies are read only when a key needs
them. Header values are RFC 2047-decoded, bodies transfer-decoded and charset-decoded; matching is
case-insensitive substring on Unicode. FROM/TO/CC/BCC also match the fields' addresses as parsed
for ENVELOPE, rendered `Display Name <local@domain>` with comments and folding removed, so
`<user (comment)@ (comment) domain.org>` is found by `FROM user@domain.org` (RFC 3501 §6.4.4
"contains the specified string"; issue 18 item 3, Dovecot's imaptest search-addresses). Each message's texts are decoded and case-folded at most once
per SEARCH, and each distinct text key is evaluated at most once per message, so 450 `NOT BODY x`
keys cost one scan of the body, not 450 decodes (issue 12).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
from bisect import bisect_right
from email.header import decode_header, make_header
from typing import Optional

from mailgw.imap.envelope import addresses
from mailgw.imap.fetch import MessageData
from mailgw.imap.mime import Part, unfold
from mailgw.imap.pacing import Pacer
from mailgw.imap.wire.dates import header_date
from mailgw.imap.wire.searchspec import Key

MAX_TEXT_PARTS = 200
ADDRESS_FIELDS = frozenset({b"from", b"to", b"cc", b"bcc"})
_PLACEHOLDERS = (b"MISSING_MAILBOX", b"MISSING_DOMAIN")  # envelope.addresses' fillers, no text of the message


class Context:
    """One message under evaluation; its decoded, case-folded texts are computed once and kept."""

    def __init__(self, seq: int, data: MessageData, recent: bool, count: int, max_uid: int,
                 cache: "dict[int, list[tuple[int, int]]]") -> None:
        self.seq, self.data, self.recent, self.count, self.max_uid = seq, data, recent, count, max_uid
        self.cache = cache  # resolved sets, shared by all messages of one SEARCH
        self.memo: dict[Key, bool] = {}  # text keys already evaluated on this message
        self._body: Optional[str] = None
        self._headers: Optional[str] = None
        self._fields: dict[bytes, list[str]] = {}

    def header_values(self, name: bytes) -> list[str]:
        """Decoded values of one header field, case-folded."""
        values = self._fields.get(name)
        if values is None:
            raw = [v for n, v in self.data.head_root().fields if n == name]
            values = [decode_value(v).casefold() for v in raw]
            if name in ADDRESS_FIELDS:
                values += [address_text(v).casefold() for v in raw]
            self._fields[name] = values
        return values

    def all_headers(self) -> str:
        if self._headers is None:
            self._headers = decode_raw(unfold(self.data.header())).casefold()
        return self._headers

    def body_text(self) -> str:
        if self._body is None:
            self._body = "\n".join(_texts(self.data.root())).casefold()
        return self._body


def decode_raw(raw: bytes) -> str:
    """UTF-8 if valid; otherwise both readings (lenient UTF-8 and Latin-1), so either kind of 8-bit matches."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace") + "\n" + raw.decode("latin-1")


def decode_value(raw: bytes) -> str:
    """Unfold and decode RFC 2047 encoded words; 8-bit raw values are read as UTF-8 (or Latin-1)."""
    text = decode_raw(unfold(raw))
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text[:10000])))
    except Exception:  # email.header raises many kinds of errors on hostile input
        return text


def address_text(raw: bytes) -> str:
    """An address list as `Name <local@domain>, group: a@b, ...`: parsed as for ENVELOPE, names RFC 2047-decoded.

    Linear in the value (envelope.addresses caps tokens and addresses).
    """
    out: list[str] = []
    for entry in addresses(unfold(raw)) or []:
        if not isinstance(entry, list):
            continue
        name, _adl, mbox, host = (x if isinstance(x, bytes) else None for x in entry)
        if host is None:  # RFC 3501 §7.4.2 group markers: start (name in the mailbox slot) or end
            if mbox:
                out.append(decode_value(mbox) + ":")
            continue
        local = b"" if mbox in _PLACEHOLDERS or mbox is None else mbox
        domain = b"" if host in _PLACEHOLDERS else host
        spec = decode_raw(local + b"@" + domain if local and domain else local or domain)
        out.append(decode_value(name) + " <" + spec + ">" if name else spec)
    return ", ".join(out)


def _texts(root: Part) -> list[str]:
    out: list[str] = []
    stack = [root]
    while stack and len(out) < MAX_TEXT_PARTS:
        part = stack.pop()
        if part.is_multipart():
            stack.extend(reversed(part.children))
            continue
        if part.message is not None:
            stack.append(part.message)
            continue
        if part.maintype != b"text":
            continue
        out.append(_decode_body(part))
    return out


def _decode_body(part: Part) -> str:
    body = part.body
    enc = (part.field(b"content-transfer-encoding") or b"").strip().lower()
    try:
        if enc == b"base64":
            body = base64.b64decode(b"".join(body.split()), validate=False)
        elif enc == b"quoted-printable":
            body = quopri.decodestring(body)
    except (binascii.Error, ValueError):
        pass
    charset = (part.param(b"charset") or b"utf-8").decode("ascii", "replace")
    try:
        codec = codecs.lookup(charset)
        if not getattr(codec, "_is_text_encoding", True) or codec.name in _NOT_CHARSETS:
            return decode_raw(body)
        return body.decode(codec.name, "replace")
    except (LookupError, UnicodeError, ValueError):
        return decode_raw(body)


# Python codecs that are no MIME charset; punycode's decoder is quadratic (a 1 MB body
# labelled charset=punycode would hold the reactor for minutes), idna raises whatever `errors` says
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"})


def needle(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").casefold()


TEXT_OPS = frozenset({"HEADER", "BODY", "TEXT"})


def matches(key: Key, ctx: Context) -> bool:
    """Evaluate a key at once (text keys included); recursion depth is bounded by the parser's nesting cap."""
    while True:
        result, pending = partial(key, ctx)
        if result is not None:
            return result
        assert pending is not None
        ctx.memo[pending] = _evaluate(pending, ctx)


async def matches_paced(key: Key, ctx: Context, pacer: Pacer) -> Optional[bool]:
    """Evaluate a key, scanning one text key at a time with a chance to yield before each scan.

    Cheap keys decide first (three-valued evaluation): `FLAGGED BODY x` scans no body of an
    unflagged message. None if the session closed meanwhile.
    """
    while True:
        result, pending = partial(key, ctx)
        if result is not None:
            return result
        assert pending is not None
        if not await pacer.tick():
            return None
        ctx.memo[pending] = _evaluate(pending, ctx)


def partial(key: Key, ctx: Context) -> tuple[Optional[bool], Optional[Key]]:
    """(value, None), or (None, the first text key still to be evaluated) when the value depends on it."""
    op = key.op
    if op in TEXT_OPS:
        hit = ctx.memo.get(key)
        return (hit, None) if hit is not None else (None, key)
    if op in ("AND", "OR"):
        decisive = op == "OR"  # the value that ends the evaluation early
        first: Optional[Key] = None
        for k in key.args:
            value, pending = partial(k, ctx)  # type: ignore[arg-type]
            if value is decisive:
                return decisive, None
            if value is None and first is None:
                first = pending
        return (None, first) if first is not None else (not decisive, None)
    if op == "NOT":
        value, pending = partial(key.args[0], ctx)  # type: ignore[arg-type]
        return (None if value is None else not value), pending
    return _evaluate(key, ctx), None


def _evaluate(key: Key, ctx: Context) -> bool:
    op = key.op
    a = key.args
    info = ctx.data.info
    if op == "ALL":
        return True
    if op in ("AND", "OR", "NOT"):
        return matches(key, ctx)
    if op == "FLAG":
        flag, want = a
        has = ctx.recent if flag == "\\Recent" else any(f.lower() == str(flag).lower() for f in info.flags)
        return has == want
    if op == "NEW":
        return ctx.recent and "\\Seen" not in info.flags
    if op == "OLD":
        return not ctx.recent
    if op == "SEQ":
        return _in_spans(_spans(a[0], ctx, ctx.count), ctx.seq)
    if op == "UID":
        return _in_spans(_spans(a[0], ctx, ctx.max_uid), info.uid)
    if op == "SIZE":
        which, n = a
        size = ctx.data.size()
        return size > n if which == "LARGER" else size < n  # type: ignore[operator]
    if op == "DATE":
        which, day = str(a[0]), a[1]
        if which.startswith("SENT"):
            values = ctx.header_values(b"date")
            got = header_date(values[0]) if values else None
            if got is None:
                return False
            which = which[4:]
        else:
            got = info.internal_date.date()
        if which == "BEFORE":
            return got < day  # type: ignore[operator]
        if which == "ON":
            return got == day
        return got >= day  # type: ignore[operator]
    if op == "HEADER":
        name, value = a
        want = needle(value)  # type: ignore[arg-type]
        values = ctx.header_values(str(name).encode("ascii", "replace"))
        return any(want in v for v in values) if want else bool(values)
    if op == "BODY":
        return needle(a[0]) in ctx.body_text()  # type: ignore[arg-type]
    if op == "TEXT":
        want = needle(a[0])  # type: ignore[arg-type]
        return want in ctx.all_headers() or want in ctx.body_text()
    return False


def _spans(sset: object, ctx: Context, star: int) -> list[tuple[int, int]]:
    spans = ctx.cache.get(id(sset))
    if spans is None:
        spans = ctx.cache[id(sset)] = sset.resolve(star)  # type: ignore[attr-defined]
    return spans


def _in_spans(spans: list[tuple[int, int]], n: int) -> bool:
    i = bisect_right(spans, (n, 4294967296)) - 1
    return i >= 0 and spans[i][0] <= n <= spans[i][1]
