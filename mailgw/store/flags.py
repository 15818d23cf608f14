"""Message flags: normalisation, STORE modes, Maildir info letters, and message-text helpers.

Shared by the in-memory and the Maildir store so that both give the same answers.
"""

from __future__ import annotations

import re
from typing import Iterable

SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
RECENT = "\\Recent"

SYSTEM_FLAGS = (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT)
_BY_LOWER = {f.lower(): f for f in SYSTEM_FLAGS}

# maildir(5): info "2," followed by letters in ASCII order.
FLAG_TO_LETTER = {DRAFT: "D", FLAGGED: "F", ANSWERED: "R", SEEN: "S", DELETED: "T"}
LETTER_TO_FLAG = {v: k for k, v in FLAG_TO_LETTER.items()}
# Keywords must be IMAP atoms: no specials, no wildcards, no backslash (RFC 3501 §9 flag-keyword).
_KEYWORD = re.compile(r"^[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+$")

MODES = ("set", "add", "remove")


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in canonical case; keywords kept as given; \\Recent and unknown system flags dropped."""
    out: set[str] = set()
    for flag in flags:
        if flag.startswith("\\"):
            canonical = _BY_LOWER.get(flag.lower())
            if canonical is not None:
                out.add(canonical)
        elif _KEYWORD.match(flag):
            out.add(flag)
    return frozenset(out)


def apply_mode(old: frozenset[str], flags: frozenset[str], mode: str) -> frozenset[str]:
    """The flags after STORE FLAGS / +FLAGS / -FLAGS."""
    if mode == "set":
        return flags
    if mode == "add":
        return old | flags
    if mode == "remove":
        return old - flags
    raise ValueError(f"unknown store mode {mode!r}")


def system_part(flags: frozenset[str]) -> frozenset[str]:
    """Only the system flags (those that live in Maildir info letters)."""
    return frozenset(f for f in flags if f in FLAG_TO_LETTER)


def keyword_part(flags: frozenset[str]) -> frozenset[str]:
    """Only the keywords."""
    return frozenset(f for f in flags if not f.startswith("\\"))


def to_letters(flags: frozenset[str]) -> str:
    """Maildir info letters, sorted: {\\Seen, \\Flagged} -> "FS"."""
    return "".join(sorted(FLAG_TO_LETTER[f] for f in flags if f in FLAG_TO_LETTER))


def from_letters(letters: str) -> frozenset[str]:
    """System flags of Maildir info letters (unknown letters, e.g. Dovecot keyword letters, ignored)."""
    return frozenset(LETTER_TO_FLAG[c] for c in letters if c in LETTER_TO_FLAG)


_LONE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(data: bytes) -> bytes:
    """Every bare LF becomes CRLF (IMAP sizes and content are in CRLF octets, RFC 3501 §2.3.4)."""
    if b"\n" not in data:
        return data
    return _LONE_LF.sub(b"\r\n", data)


def header_block(data: bytes, cap: int | None = None) -> bytes:
    """The header block up to and including the empty line (the whole message if there is none)."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        block = data[: end + 4]
    elif data.startswith(b"\r\n"):
        block = b"\r\n"
    else:
        block = data
    if cap is not None and len(block) > cap:
        return block[:cap]
    return block
