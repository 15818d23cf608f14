"""Sequence and UID sets (RFC 3501 §9 sequence-set): linear parsing, evaluation against real counts.

A set is kept as its ranges; evaluation clamps to the messages that exist (RFC 9051 §6.4.4 style),
so `1:4294967295` costs O(ranges + matches), never O(4294967295).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

MAX_NUMBER = 4294967295
STAR = 0  # stands for "*" inside a range


class SequenceSetError(ValueError):
    """Not a valid sequence set."""


@dataclass(frozen=True)
class SequenceSet:
    """Parsed ranges; each end is a number in 1..2^32-1 or STAR."""

    ranges: tuple[tuple[int, int], ...]
    text: bytes = b""

    def resolve(self, star: int) -> list[tuple[int, int]]:
        """Ranges with `*` replaced by `star`, ordered low-high, sorted and merged."""
        spans: list[tuple[int, int]] = []
        for a, b in self.ranges:
            a = star if a == STAR else a
            b = star if b == STAR else b
            if a > b:
                a, b = b, a
            spans.append((a, b))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def sequence_numbers(self, count: int) -> list[int]:
        """Message sequence numbers (1-based) selected among `count` messages, ascending."""
        out: list[int] = []
        if count <= 0:
            return out
        for a, b in self.resolve(count):
            if a > count:
                break
            out.extend(range(max(a, 1), min(b, count) + 1))
        return out

    def uid_indexes(self, uids: Sequence[int]) -> list[int]:
        """0-based positions in the ascending `uids` whose UID is in the set, ascending."""
        out: list[int] = []
        if not uids:
            return out
        for a, b in self.resolve(uids[-1]):
            lo = bisect_left(uids, a)
            hi = bisect_right(uids, b)
            out.extend(range(lo, hi))
        return out

    def contains_uid(self, uid: int, max_uid: int) -> bool:
        """Membership of one UID (for SEARCH UID); `*` is the largest UID."""
        for a, b in self.resolve(max_uid):
            if a <= uid <= b:
                return True
        return False


def _number(tok: bytes, allow_star: bool = True) -> int:
    if tok == b"*" and allow_star:
        return STAR
    if not tok or len(tok) > 10 or not tok.isdigit():
        raise SequenceSetError("Invalid messageset")
    value = int(tok)
    if value < 1 or value > MAX_NUMBER:
        raise SequenceSetError("Invalid messageset")
    return value


def parse(text: bytes) -> SequenceSet:
    """Parse `1,3:5,7:*`; raises SequenceSetError. Linear in len(text)."""
    if not text:
        raise SequenceSetError("Invalid messageset")
    ranges: list[tuple[int, int]] = []
    for part in text.split(b","):
        lo, sep, hi = part.partition(b":")
        a = _number(lo)
        b = _number(hi) if sep else a
        ranges.append((a, b))
    return SequenceSet(tuple(ranges), text)


def format_uids(uids: Sequence[int]) -> bytes:
    """Compact a list of UIDs into a set string, keeping the given order (for COPYUID pairs)."""
    parts: list[bytes] = []
    start: Optional[int] = None
    prev = 0
    for u in uids:
        if start is not None and u == prev + 1:
            prev = u
            continue
        if start is not None:
            parts.append(_span(start, prev))
        start = prev = u
    if start is not None:
        parts.append(_span(start, prev))
    return b",".join(parts)


def _span(a: int, b: int) -> bytes:
    return b"%d" % a if a == b else b"%d:%d" % (a, b)


def iter_numbers(sset: SequenceSet, count: int) -> Iterator[int]:
    """Iterate sequence numbers without materialising (for very large folders)."""
    for a, b in sset.resolve(count):
        if a > count:
            return
        yield from range(max(a, 1), min(b, count) + 1)
