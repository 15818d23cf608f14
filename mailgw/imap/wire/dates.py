"""IMAP date and date-time values (RFC 3501 §9 date, date-time) and RFC 5322 Date header parsing."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_tz
from typing import Optional

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}


def parse_date(raw: bytes) -> Optional[date]:
    """`1-Feb-1994` -> date, or None."""
    try:
        text = raw.decode("ascii")
        d, m, y = text.split("-")
        if not (1 <= len(d) <= 2 and d.isdigit() and len(y) == 4 and y.isdigit()):
            return None
        return date(int(y), _MONTHS[m.upper()], int(d))
    except (ValueError, KeyError, UnicodeDecodeError):
        return None


def parse_datetime(raw: bytes) -> Optional[datetime]:
    """`17-Jul-1996 02:44:25 -0700` (day may be space-padded) -> aware datetime, or None."""
    try:
        text = raw.decode("ascii")
        if len(text) != 26:
            return None
        day = parse_date(text[:11].strip().encode())
        hh, mm, ss = text[12:20].split(":")
        zone = text[21:]
        if text[11] != " " or text[20] != " " or zone[0] not in "+-" or not zone[1:].isdigit():
            return None
        if day is None or not (hh.isdigit() and mm.isdigit() and ss.isdigit()):
            return None
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        tz = timezone(offset if zone[0] == "+" else -offset)
        return datetime(day.year, day.month, day.day, int(hh), int(mm), int(ss), tzinfo=tz)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def header_date(value: str) -> Optional[date]:
    """The date part of an RFC 5322 Date header (for SENTBEFORE/SENTON/SENTSINCE), in its own zone."""
    try:
        parsed = parsedate_tz(value[:200])
        if parsed is None:
            return None
        return date(parsed[0], parsed[1], parsed[2])
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
