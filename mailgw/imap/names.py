"""Mailbox names at the IMAP edge: mUTF-7 decoding, first-line validation, LIST pattern matching."""

from __future__ import annotations

from mailgw.errors import InvalidMailboxName
from mailgw.imap.wire import mutf7

SEPARATOR = "/"


class BadName(Exception):
    """A mailbox argument the client must be told about with NO and this text."""

    def __init__(self, text: str, code: str = "") -> None:
        self.text = text
        self.code = code
        super().__init__(text)


def decode_mailbox(raw: bytes) -> str:
    """Wire mailbox -> Unicode name; INBOX (any case, also as first component) becomes `INBOX`."""
    try:
        name = mutf7.decode(raw)
    except mutf7.MUTF7Error:
        raise BadName("Mailbox name is not valid mUTF-7") from None
    reason = _invalid(name)
    if reason:
        raise BadName("Invalid mailbox name: " + reason, "CANNOT")
    head, sep, tail = name.partition(SEPARATOR)
    if head.upper() == "INBOX":
        name = "INBOX" + sep + tail
    return name


def _invalid(name: str) -> str:
    if not name:
        return "Empty name"
    if "\x00" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "Contains control characters"
    if name.startswith(SEPARATOR):
        return "Begins with hierarchy separator"
    if SEPARATOR * 2 in name:
        return "Has adjacent hierarchy separators"
    parts = name.rstrip(SEPARATOR).split(SEPARATOR)
    if any(p in (".", "..") or ".." in p for p in parts):
        return "Contains '..'"
    if name.startswith("~"):
        return "Begins with '~'"
    if any(c in name for c in "*%\\"):
        return "Contains wildcard or backslash"
    return ""


def store_error_text(err: InvalidMailboxName) -> str:
    return err.public


def encode_mailbox(name: str) -> bytes:
    return mutf7.encode(name)


def match(pattern: str, name: str) -> bool:
    """LIST wildcard match: `*` anything, `%` anything but the separator; linear-space DP, O(len*len)."""
    if pattern.upper().startswith("INBOX") and name.upper().startswith("INBOX"):
        pattern = "INBOX" + pattern[5:]
        name = "INBOX" + name[5:]
    p, n = pattern, name
    # positions in the pattern reachable after consuming a prefix of the name
    prev = _closure({0}, p)
    for ch in n:
        nxt: set[int] = set()
        for i in prev:
            if i < len(p):
                c = p[i]
                if c == "*" or (c == "%" and ch != SEPARATOR):
                    nxt.add(i)
                elif c == ch:
                    nxt.add(i + 1)
        if not nxt:
            return False
        prev = _closure(nxt, p)
    return len(p) in prev


def _closure(states: set[int], p: str) -> set[int]:
    out = set(states)
    stack = list(states)
    while stack:
        i = stack.pop()
        if i < len(p) and p[i] in "*%" and i + 1 not in out:
            out.add(i + 1)
            stack.append(i + 1)
    return out


MAX_PATTERN = 512  # matching is O(len(pattern) * len(name)) per folder: keep LIST cheap
MAX_WILDCARDS = 32


def decode_pattern(raw: bytes) -> str:
    """A LIST pattern in mUTF-7 (wildcards allowed) -> Unicode; BadName if invalid or too costly."""
    if len(raw) > MAX_PATTERN or raw.count(b"*") + raw.count(b"%") > MAX_WILDCARDS:
        raise BadName("Mailbox pattern too long", "LIMIT")
    try:
        return mutf7.decode(raw)
    except mutf7.MUTF7Error:
        raise BadName("Mailbox name is not valid mUTF-7") from None
