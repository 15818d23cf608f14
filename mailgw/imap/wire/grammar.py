"""Command grammar: a framed Command -> Request(tag, name, uid, args); ParseError for anything else.

ParseError (BadTag included) is the only exception any input raises; every loop consumes input or
raises, and nesting and list lengths are capped (see docs/imap.md, Limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mailgw.imap.wire import sequence
from mailgw.imap.wire.dates import parse_datetime
from mailgw.imap.wire.fetchspec import parse_items
from mailgw.imap.wire.framing import Command
from mailgw.imap.wire.reader import ATOM_CHARS, ParseError, Reader, parse_tag
from mailgw.imap.wire.searchspec import parse_keys

SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}
NO_ARGS = {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "EXPUNGE", "UNSELECT", "IDLE", "NAMESPACE"}
ONE_MAILBOX = {"CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"}
UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"}
MAX_LIST_PATTERNS = 32  # LIST "" (p1 ... pN) (RFC 5258 §3): matching cost grows with N
STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE"}


class BadTag(ParseError):
    """Missing or invalid tag: answered untagged."""


@dataclass
class Request:
    """One parsed command. `args` is a tuple whose shape depends on `name` (see parse_command)."""

    tag: bytes
    name: str
    uid: bool = False
    args: tuple[object, ...] = ()


def command_name(cmd: Command) -> str:
    """The upper-case command word (second token) of a possibly partial command, '' if absent."""
    parts = cmd.lines[0].split(b" ", 3)
    if len(parts) < 2:
        return ""
    name = parts[1].upper()
    if name == b"UID" and len(parts) > 2:
        name = parts[2].upper()
    return name.decode("ascii", "replace")


def parse_command(cmd: Command) -> Request:
    """Parse a whole command; raises BadTag (untagged BAD) or ParseError (tagged BAD)."""
    tag = parse_tag(cmd)
    if tag is None:
        raise BadTag()
    r = Reader(cmd)
    r.pos = len(tag)
    try:
        r.sp()
        name = r.keyword()
    except ParseError:
        raise ParseError("Missing command.") from None
    uid = False
    if name == "UID":
        r.sp()
        name = r.keyword()
        if name not in UID_COMMANDS:
            raise ParseError("Unknown command")
        uid = True
    req = Request(tag, name, uid)
    parser = _PARSERS.get(name)
    if parser is None:
        if name in NO_ARGS:
            r.end()
            return req
        raise ParseError("Unknown command")
    req.args = parser(r, uid)
    r.end()
    return req


def _mailbox(r: Reader) -> bytes:
    return r.astring()


def _seq(r: Reader, uid: bool, command: str) -> sequence.SequenceSet:
    tok = r.take(_SEQ_CHARS)
    try:
        return sequence.parse(tok)
    except sequence.SequenceSetError as e:
        kind = "uidset" if uid else "messageset"
        raise ParseError(f"Error in IMAP command {'UID ' if uid else ''}{command}: Invalid {kind}") from e


def parse_flag(raw: bytes) -> str:
    text = raw.decode("ascii", "replace")
    if text.startswith("\\"):
        canon = SYSTEM_FLAGS.get(text.lower())
        if canon is None:
            raise ParseError("Invalid system flag " + text[:40])
        return canon
    if text.upper() == "NIL":  # NIL is no flag-keyword a client may set (issue 18 item 1; Dovecot refuses it too)
        raise ParseError("Invalid flag " + text)
    return text


def _flag_token(r: Reader) -> str:
    if r.accept(b"\\"):
        return parse_flag(b"\\" + r.take(ATOM_CHARS))
    return parse_flag(r.atom())


def flag_list(r: Reader) -> tuple[str, ...]:
    r.expect(b"(")
    flags: list[str] = []
    if r.accept(b")"):
        return ()
    flags.append(_flag_token(r))
    while r.accept(b" "):
        flags.append(_flag_token(r))
    r.expect(b")")
    return tuple(flags)


def _login(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    user = r.astring()
    r.sp()
    return (user, r.astring())


def _authenticate(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    mech = r.keyword()
    initial: Optional[bytes] = None
    if r.accept(b" "):
        initial = r.rest()
        if not initial:
            raise ParseError()
    return (mech, initial)


def _select(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    box = _mailbox(r)
    if r.accept(b" "):
        _skip_parens(r)  # RFC 4466 select parameters (none supported): accepted and ignored
    return (box,)


def _skip_parens(r: Reader) -> None:
    r.expect(b"(")
    depth = 1
    while depth:
        c = r.peek()
        if c < 0:
            if r.at_literal():
                r.literal()
                continue
            raise ParseError()
        r.pos += 1
        if c == ord("("):
            depth += 1
            if depth > 8:
                raise ParseError("Too deep nesting")
        elif c == ord(")"):
            depth -= 1


def _one_mailbox(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    return (_mailbox(r),)


def _rename(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    old = _mailbox(r)
    r.sp()
    return (old, _mailbox(r))


def _atom_list(r: Reader) -> tuple[str, ...]:
    r.expect(b"(")
    out: list[str] = []
    if r.accept(b")"):
        return ()
    out.append(r.keyword())
    while r.accept(b" "):
        out.append(r.keyword())
    r.expect(b")")
    return tuple(out)


def _list(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    selection: tuple[str, ...] = ()
    if r.peek() == ord("("):
        selection = _atom_list(r)
        r.sp()
    ref = _mailbox(r)
    r.sp()
    patterns: list[bytes] = []
    if r.accept(b"("):
        patterns.append(r.list_mailbox())
        while r.accept(b" "):
            patterns.append(r.list_mailbox())
            if len(patterns) > MAX_LIST_PATTERNS:
                raise ParseError("Too many mailbox patterns")
        r.expect(b")")
    else:
        patterns.append(r.list_mailbox())
    returns: tuple[str, ...] = ()
    if r.accept(b" "):
        if r.keyword() != "RETURN":
            raise ParseError()
        r.sp()
        returns = _atom_list(r)
    return (selection, ref, tuple(patterns), returns)


def _lsub(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    ref = _mailbox(r)
    r.sp()
    return (ref, r.list_mailbox())


def _status(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    box = _mailbox(r)
    r.sp()
    items = _atom_list(r)
    if not items or any(i not in STATUS_ITEMS for i in items):
        raise ParseError("Invalid STATUS item")
    return (box, items)


def _append(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    box = _mailbox(r)
    r.sp()
    flags: Optional[tuple[str, ...]] = None
    when = None
    if r.peek() == ord("("):
        flags = flag_list(r)
        r.sp()
    if r.peek() == ord('"'):
        when = parse_datetime(r.quoted())
        if when is None:
            raise ParseError("Invalid date-time")
        r.sp()
    return (box, flags, when, r.literal())


def _search(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    charset: Optional[str] = None
    start = (r.seg, r.pos)
    word = r.take(ATOM_CHARS)
    if word.upper() == b"CHARSET":
        r.sp()
        charset = r.astring().decode("ascii", "replace").upper()
        r.sp()
    else:
        r.seg, r.pos = start
    key = parse_keys(r)
    return (charset, key)


def _fetch(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    sset = _seq(r, uid, "FETCH")
    r.sp()
    return (sset, parse_items(r))


def _store(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    sset = _seq(r, uid, "STORE")
    r.sp()
    word = r.take(_STORE_CHARS).upper()
    silent = word.endswith(b".SILENT")
    if silent:
        word = word[:-7]
    mode = {b"FLAGS": "set", b"+FLAGS": "add", b"-FLAGS": "remove"}.get(word)
    if mode is None:
        raise ParseError("Invalid STORE item")
    r.sp()
    if r.peek() == ord("("):
        flags = flag_list(r)
    else:
        items = [_flag_token(r)]
        while r.accept(b" "):
            items.append(_flag_token(r))
        flags = tuple(items)
    return (sset, mode, silent, flags)


def _copy(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    sset = _seq(r, uid, "COPY")
    r.sp()
    return (sset, _mailbox(r))


def _uid_expunge(r: Reader, uid: bool) -> tuple[object, ...]:
    if not uid:
        r.end()
        return ()
    r.sp()
    return (_seq(r, uid, "EXPUNGE"),)


def _id(r: Reader, uid: bool) -> tuple[object, ...]:
    r.sp()
    if r.peek() in (ord("N"), ord("n")):
        if r.keyword() != "NIL":
            raise ParseError()
        return (None,)
    r.expect(b"(")
    params: list[tuple[bytes, Optional[bytes]]] = []
    while not r.accept(b")"):
        if params:
            r.sp()
        key = r.string()
        r.sp()
        params.append((key, r.nstring()))
        if len(params) > 30:
            raise ParseError("Too many ID parameters")
    return (tuple(params),)


def _enable(r: Reader, uid: bool) -> tuple[object, ...]:
    caps = []
    while r.accept(b" "):
        caps.append(r.keyword())
    if not caps:
        raise ParseError()
    return (tuple(caps),)


_SEQ_CHARS = frozenset(b"0123456789:*,")
_STORE_CHARS = frozenset(b"+-.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

_PARSERS = {
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "SELECT": _select, "EXAMINE": _select,
    "RENAME": _rename, "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy,
    "EXPUNGE": _uid_expunge, "ID": _id, "ENABLE": _enable,
    **{n: _one_mailbox for n in ONE_MAILBOX},
}
