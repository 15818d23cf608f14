"""SEARCH key grammar (RFC 3501 §6.4.4) into a small tree; nesting is capped, never recursive without bound."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Union

from mailgw.imap.wire import sequence
from mailgw.imap.wire.dates import parse_date
from mailgw.imap.wire.reader import MAX_DEPTH, ParseError, Reader

FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True), "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False),
}
HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}
DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


@dataclass(frozen=True)
class Key:
    """A search key: op is ALL | FLAG | HEADER | BODY | TEXT | DATE | SIZE | UID | SEQ | NOT | OR | AND | NEW | OLD."""

    op: str
    args: tuple[object, ...] = ()


Term = Union[Key]


MAX_KEYS = 1000  # evaluation is O(keys * messages): a 64 KiB line of "ALL ALL ..." must stay cheap
MAX_TEXT_KEYS = 32  # distinct HEADER/BODY/TEXT keys: each one scans every message's text once (issue 12)


def parse_keys(r: Reader) -> Key:
    """search-key *(SP search-key) up to the end of the command, as one AND node."""
    count: list[Any] = [0, set()]  # all keys, distinct text keys
    keys = [_key(r, 0, count)]
    while r.accept(b" "):
        keys.append(_key(r, 0, count))
    r.end()
    return keys[0] if len(keys) == 1 else Key("AND", tuple(keys))


def _key(r: Reader, depth: int, count: list[Any]) -> Key:
    if depth > MAX_DEPTH:
        raise ParseError("Too deep nesting")
    count[0] += 1
    if count[0] > MAX_KEYS:
        raise ParseError("Too many search keys")
    if r.accept(b"("):
        keys = [_key(r, depth + 1, count)]
        while r.accept(b" "):
            keys.append(_key(r, depth + 1, count))
        r.expect(b")")
        return keys[0] if len(keys) == 1 else Key("AND", tuple(keys))
    c = r.peek()
    if c == ord("*") or ord("0") <= c <= ord("9"):
        return Key("SEQ", (_seqset(r),))
    word = r.keyword()
    if word == "ALL":
        return Key("ALL")
    if word in FLAG_KEYS:
        flag, want = FLAG_KEYS[word]
        return Key("FLAG", (flag, want))
    if word in ("NEW", "OLD"):
        return Key(word)
    if word in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        return Key("FLAG", (r.atom().decode("ascii", "replace"), word == "KEYWORD"))
    if word in HEADER_KEYS:
        r.sp()
        return _text_key(Key("HEADER", (word.lower(), r.astring())), count)
    if word == "HEADER":
        r.sp()
        name = r.astring()
        r.sp()
        return _text_key(Key("HEADER", (name.decode("ascii", "replace").lower(), r.astring())), count)
    if word in ("BODY", "TEXT"):
        r.sp()
        return _text_key(Key(word, (r.astring(),)), count)
    if word in DATE_KEYS:
        r.sp()
        return Key("DATE", (word, _date(r)))
    if word in ("LARGER", "SMALLER"):
        r.sp()
        return Key("SIZE", (word, r.number()))
    if word == "UID":
        r.sp()
        return Key("UID", (_seqset(r),))
    if word == "NOT":
        r.sp()
        return Key("NOT", (_key(r, depth + 1, count),))
    if word == "OR":
        r.sp()
        a = _key(r, depth + 1, count)
        r.sp()
        return Key("OR", (a, _key(r, depth + 1, count)))
    raise ParseError("Error in IMAP command SEARCH: Unknown argument " + word[:40])


def _text_key(key: Key, count: list[Any]) -> Key:
    distinct: set[Key] = count[1]
    distinct.add(key)
    if len(distinct) > MAX_TEXT_KEYS:
        raise ParseError("Too many search keys")
    return key


def _seqset(r: Reader) -> sequence.SequenceSet:
    tok = r.take(_SEQ_CHARS)
    try:
        return sequence.parse(tok)
    except sequence.SequenceSetError as e:
        raise ParseError("Error in IMAP command SEARCH: Invalid messageset") from e


def _date(r: Reader) -> date:
    raw = r.astring()
    d = parse_date(raw)
    if d is None:
        raise ParseError("Error in IMAP command SEARCH: Invalid date")
    return d


_SEQ_CHARS = frozenset(b"0123456789:*,")
