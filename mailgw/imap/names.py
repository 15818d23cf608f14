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


class Pattern:
    """A LIST/LSUB pattern compiled for bit-parallel matching (shift-and over the pattern's positions).

    `*` matches anything, `%` anything but the separator (RFC 3501 §6.3.8). Matching one name costs
    len(name) steps of a few integer operations on len(pattern)-bit integers: linear, no
    backtracking whatever the wildcards (a regex like `.*a.*a.*b` backtracks polynomially).
    """

    __slots__ = ("text", "literal", "star", "wild", "accept", "inbox", "words")

    def __init__(self, pattern: str) -> None:
        if pattern.upper().startswith("INBOX"):
            pattern = "INBOX" + pattern[5:]
        self.inbox = pattern.startswith("INBOX")
        collapsed: list[str] = []
        for ch in pattern:  # a run of wildcards is one `*` if it has one, else one `%`
            if ch in "*%" and collapsed and collapsed[-1] in "*%":
                if ch == "*":
                    collapsed[-1] = "*"
                continue
            collapsed.append(ch)
        self.text = "".join(collapsed)
        self.literal: dict[str, int] = {}
        self.star = self.wild = 0
        for i, ch in enumerate(self.text):
            bit = 1 << i
            if ch == "*":
                self.star |= bit
                self.wild |= bit
            elif ch == "%":
                self.wild |= bit
            else:
                self.literal[ch] = self.literal.get(ch, 0) | bit
        self.accept = 1 << len(self.text)
        self.words = 1 + len(self.text) // 64  # machine words per step: the cost model of match()

    def match(self, name: str) -> bool:
        if self.inbox and name[:5].upper() == "INBOX":
            name = "INBOX" + name[5:]
        literal, star, wild = self.literal, self.star, self.wild
        pct = wild & ~star
        state = 1 | ((1 & wild) << 1)  # bit i: the first i pattern characters match a prefix of the name
        for ch in name:
            state = ((state & literal.get(ch, 0)) << 1) | (state & star) | (0 if ch == SEPARATOR else state & pct)
            if not state:
                return False
            state |= (state & wild) << 1  # a wildcard may match the empty string (runs are collapsed)
        return bool(state & self.accept)

    def cost(self, name: str) -> int:
        return (len(name) + 1) * self.words


def match(pattern: str, name: str) -> bool:
    """LIST wildcard match of one name (see Pattern)."""
    return Pattern(pattern).match(name)


MAX_PATTERN = 512  # octets of one LIST/LSUB pattern
MAX_WILDCARDS = 32
MAX_MATCH_WORK = 2_000_000  # Pattern.cost summed over patterns x mailboxes for one command


def decode_pattern(raw: bytes) -> str:
    """A LIST pattern in mUTF-7 (wildcards allowed) -> Unicode; BadName if invalid or too costly."""
    if len(raw) > MAX_PATTERN or raw.count(b"*") + raw.count(b"%") > MAX_WILDCARDS:
        raise BadName("Mailbox pattern too long", "LIMIT")
    try:
        return mutf7.decode(raw)
    except mutf7.MUTF7Error:
        raise BadName("Mailbox name is not valid mUTF-7") from None
