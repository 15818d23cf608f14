"""ENVELOPE and BODYSTRUCTURE values (RFC 3501 §7.4.2) from a MIME tree; tolerant address parsing.

Nothing here raises on message content, and every loop is linear in its input (the property tests
in tests/imap/test_imap_wire_properties.py run these under a deadline).
"""

from __future__ import annotations

from typing import Optional

from mailgw.imap.mime import Part, body_lines, parse_params, unfold
from mailgw.imap.wire.response import Value

MAX_ADDRESSES = 10000
MAX_TOKENS = 100000  # per header value: `To: a,a,a,...` of 10 MB would otherwise be 5 million tuples
MAX_LANGUAGES = 64
# RFC 5322 §3.2.3 specials that structure an address list. "." is not one here: it stays inside atoms
# (dot-atom, obs-phrase "Mr. Real"), which keeps display names and local parts byte-faithful.
_SPECIALS = b"<>,:;@"
_ATOM_STOP = frozenset(b' \t\r\n()"[' + _SPECIALS)
Token = tuple[str, bytes]  # ('a', atom) ('q', quoted) ('s', special) ('c', comment text)


def _tokens(value: bytes) -> list[Token]:
    """RFC 5322 lexical tokens of a header value; linear, and every branch consumes at least one byte.

    Malformed input gives a best-effort token list (Dovecot's behaviour): an unbalanced ")" is
    skipped, an unterminated comment, quoted string or domain literal runs to the end of the value.
    """
    out: list[Token] = []
    i, n = 0, len(value)
    while i < n and len(out) < MAX_TOKENS:
        start = i
        c = value[i]
        if c in b" \t\r\n" or c == 0x29:  # whitespace, or a ")" outside any comment: skipped
            i += 1
        elif c == 0x28:
            i, text = _comment(value, i)
            out.append(("c", text))
        elif c == 0x22:
            i, text = _quoted(value, i)
            out.append(("q", text))
        elif c == 0x5B:  # domain literal, kept whole
            j = value.find(b"]", i + 1)
            i = n if j < 0 else j + 1
            out.append(("a", value[start:i]))
        elif c in _SPECIALS:
            out.append(("s", bytes([c])))
            i += 1
        else:
            i += 1  # c is not a stop byte (every stop byte has a branch above): the atom is non-empty
            while i < n and value[i] not in _ATOM_STOP:
                i += 1
            out.append(("a", value[start:i]))
        assert i > start  # the loop always advances (issue 12: a stray ")" once looped forever)
    return out


def _comment(value: bytes, i: int) -> tuple[int, bytes]:
    """A nested comment starting at value[i] == "(": (index after it, its text with folding removed)."""
    n = len(value)
    depth = 0
    buf = bytearray()
    while i < n:
        c = value[i]
        i += 1
        if c == 0x5C and i < n:  # quoted-pair
            buf.append(value[i])
            i += 1
            continue
        if c == 0x28:
            depth += 1
            if depth == 1:
                continue
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                break
        if c not in b"\r\n":
            buf.append(c)
    return i, bytes(buf).strip(b" \t")


def _quoted(value: bytes, i: int) -> tuple[int, bytes]:
    """A quoted string starting at value[i] == '"': (index after it, its content without quoted-pairs)."""
    n = len(value)
    buf = bytearray()
    i += 1
    while i < n and value[i] != 0x22:
        if value[i] == 0x5C and i + 1 < n:
            i += 1
        if value[i] not in b"\r\n":
            buf.append(value[i])
        i += 1
    return i + 1, bytes(buf)


def _phrase(toks: list[Token]) -> Optional[bytes]:
    """RFC 5322 §3.2.5 phrase: words (atoms, quoted strings) joined by one space; encoded words stay encoded."""
    words = [t[1] for t in toks if t[0] in "aq"]
    return b" ".join(words) if words else None


def _addr_spec(toks: list[Token]) -> tuple[bytes, bytes]:
    toks = [t for t in toks if t[0] != "c"]
    at = max((i for i, t in enumerate(toks) if t == ("s", b"@")), default=-1)
    local = toks if at < 0 else toks[:at]
    domain = [] if at < 0 else toks[at + 1 :]
    lp = b"".join(b'"' + t[1] + b'"' if t[0] == "q" and _needs_quote(t[1]) else t[1] for t in local)
    dom = b"".join(t[1] for t in domain)
    return (lp or b"MISSING_MAILBOX", dom or b"MISSING_DOMAIN")


def _needs_quote(local: bytes) -> bool:
    return any(c in b' ()<>[]:;@\\,"' for c in local)


def _bare(words: list[Token]) -> list[Value]:
    """An addr-spec without angle brackets; a comment in it is the display name (as Dovecot does)."""
    mbox, host = _addr_spec(words)
    comments = [t[1] for t in words if t[0] == "c" and t[1]]
    return [comments[-1] if comments else None, None, mbox, host]


def addresses(raw: Optional[bytes]) -> Optional[list[Value]]:
    """An address-list header -> [(name adl mailbox host), ...] with group markers, or None.

    Every loop below advances `i` by at least one token per iteration, so the cost is linear in the
    number of tokens; the output is capped at MAX_ADDRESSES.
    """
    if raw is None:
        return None
    toks = _tokens(raw)
    out: list[Value] = []
    i, n = 0, len(toks)
    words: list[Token] = []
    while i < n and len(out) < MAX_ADDRESSES:
        t = toks[i]
        i += 1
        if t == ("s", b":") and any(w[0] != "c" for w in words) and all(w[0] in "aqc" for w in words):
            out.append([None, None, _phrase(words), None])  # RFC 3501 §7.4.2: group start
            words = []
        elif t == ("s", b"<"):
            inner: list[Token] = []
            while i < n and toks[i] != ("s", b">"):
                if toks[i][0] != "c":
                    inner.append(toks[i])
                i += 1
            i += 1
            route: Optional[bytes] = None
            colon = next((k for k, x in enumerate(inner) if x == ("s", b":")), -1)
            if colon >= 0 and inner and inner[0] == ("s", b"@"):
                route = b"".join(x[1] for x in inner[:colon])
                inner = inner[colon + 1 :]
            if inner:
                mbox, host = _addr_spec(inner)
                out.append([_phrase(words), route, mbox, host])
            words = []
            while i < n and toks[i] not in (("s", b","), ("s", b";")):
                i += 1
        elif t in (("s", b","), ("s", b";")):
            if any(w[0] != "c" for w in words):
                out.append(_bare(words))
            words = []
            if t == ("s", b";"):
                out.append([None, None, None, None])  # group end
        else:
            words.append(t)
    if any(w[0] != "c" for w in words) and len(out) < MAX_ADDRESSES:
        out.append(_bare(words))
    return out or None


def _nstr(part: Part, name: bytes) -> Optional[bytes]:
    v = part.field(name)
    return None if v is None else unfold(v)


def envelope(msg: Part) -> list[Value]:
    """(date subject from sender reply-to to cc bcc in-reply-to message-id)."""
    frm = addresses(_nstr(msg, b"from"))
    sender = addresses(_nstr(msg, b"sender")) or frm
    reply_to = addresses(_nstr(msg, b"reply-to")) or frm
    return [
        _nstr(msg, b"date"), _nstr(msg, b"subject"), frm, sender, reply_to,
        addresses(_nstr(msg, b"to")), addresses(_nstr(msg, b"cc")), addresses(_nstr(msg, b"bcc")),
        _nstr(msg, b"in-reply-to"), _nstr(msg, b"message-id"),
    ]


def _param_list(params: list[tuple[bytes, bytes]]) -> Optional[list[Value]]:
    if not params:
        return None
    out: list[Value] = []
    for k, v in params:
        out.extend((k, v))
    return out


def _disposition(part: Part) -> Optional[list[Value]]:
    raw = part.field(b"content-disposition")
    if raw is None:
        return None
    kind, params = parse_params(raw)
    if not kind:
        return None
    return [kind, _param_list(params)]


def _language(part: Part) -> Optional[Value]:
    raw = _nstr(part, b"content-language")
    if not raw:
        return None
    langs: list[Value] = [x.strip() for x in raw.split(b",", MAX_LANGUAGES)[:MAX_LANGUAGES] if x.strip()]
    return langs[0] if len(langs) == 1 else langs


def bodystructure(part: Part, extended: bool = True) -> list[Value]:
    """BODYSTRUCTURE (extended) or BODY (basic) of a part; iterative depth is bounded by MAX_MIME_DEPTH."""
    if part.is_multipart():
        out: list[Value] = [bodystructure(c, extended) for c in part.children]
        out.append(part.subtype)
        if extended:
            out.extend([_param_list(part.params), _disposition(part), _language(part),
                        _nstr(part, b"content-location")])
        return out
    body = part.body
    enc = _nstr(part, b"content-transfer-encoding")
    out = [part.maintype, part.subtype, _param_list(part.params), _nstr(part, b"content-id"),
           _nstr(part, b"content-description"), (enc.lower() if enc else b"7bit"), len(body)]
    if part.maintype == b"message" and part.subtype == b"rfc822" and part.message is not None:
        out.extend([envelope(part.message), bodystructure(part.message, extended), body_lines(body)])
    elif part.maintype == b"text":
        out.append(body_lines(body))
    if extended:
        out.extend([_nstr(part, b"content-md5"), _disposition(part), _language(part),
                    _nstr(part, b"content-location")])
    return out
