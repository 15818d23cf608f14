"""Which messages are meeting requests (RFC 5546 iTIP over RFC 6047 iMIP), and what they say.

A meeting request has a `text/calendar` part (or an `.ics` attachment: application/ics, or
application/octet-stream named *.ics) whose METHOD is REQUEST, CANCEL or COUNTER, at top level or
inside multiparts (not inside an attached message/rfc822: a forwarded invitation is not one).
Bounded: at most MAX_PARTS parts are looked at, a calendar part above MAX_CALENDAR octets is
skipped, and the iCalendar text is parsed by the `icalendar` package inside a catch-all: anything
malformed means "not a meeting request", never an exception.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import quopri
from dataclasses import dataclass
from typing import Any, Optional, Union

import icalendar

from mailgw.imap.mime import Part, parse_params

METHODS = ("REQUEST", "CANCEL", "COUNTER")
MAX_PARTS = 64  # parts examined per message (a meeting request has 2 to 6)
MAX_CALENDAR = 128 * 1024  # encoded octets of one calendar part (invitations are a few KiB; 128 KiB parse ~70 ms)
MAX_TEXT = 200  # characters shown of SUMMARY, LOCATION, ORGANIZER
_USED = ("DTSTART", "DTEND", "DURATION", "SUMMARY", "LOCATION", "ORGANIZER", "UID")

When = Union[dt.date, dt.datetime]


@dataclass(frozen=True)
class Meeting:
    """What the summary shows of the first VEVENT."""

    method: str
    uid: str
    summary: str
    start: When
    end: Optional[When]
    tzid: str  # DTSTART's TZID parameter, "UTC", or "" for floating and all-day times
    location: str
    organizer: str  # "Name <address>", or the address
    recurs: bool


def calendar_parts(root: Part, truncated: bool) -> list[Part]:
    """Candidate calendar parts in document order (breadth-bounded walk; no descent into message/rfc822)."""
    found: list[Part] = []
    stack, seen = [root], 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        if part.is_multipart():
            stack.extend(reversed(part.children))
            continue
        if truncated and part.end >= len(part.data):
            continue  # cut off by the examined prefix: not judged on half its bytes
        if _is_calendar(part):
            found.append(part)
    return found


def _is_calendar(part: Part) -> bool:
    kind = (part.maintype, part.subtype)
    if kind == (b"text", b"calendar") or kind == (b"application", b"ics"):
        return True
    if kind != (b"application", b"octet-stream"):
        return False
    name = part.param(b"name") or b""
    disposition = part.field(b"content-disposition")
    if disposition is not None:
        name = dict(parse_params(disposition)[1]).get(b"filename", name)
    return name.lower().endswith(b".ics")


def meeting_of(part: Part) -> Optional[Meeting]:
    """The meeting a calendar part describes, or None (too big, malformed, or not REQUEST/CANCEL/COUNTER)."""
    if part.end - part.body_start > MAX_CALENDAR:
        return None
    try:
        return _parse(_decoded_text(part), (part.param(b"method") or b"").decode("ascii", "replace").upper())
    except Exception:  # icalendar and dateutil raise many kinds of errors on hostile input
        return None


def _decoded_text(part: Part) -> str:
    body = part.body
    enc = (part.field(b"content-transfer-encoding") or b"").strip().lower()
    if enc == b"base64":
        body = base64.b64decode(b"".join(body.split()), validate=False)
    elif enc == b"quoted-printable":
        body = quopri.decodestring(body)
    charset = (part.param(b"charset") or b"utf-8").decode("ascii", "replace")
    try:
        return body.decode(charset if charset.lower() in ("utf-8", "us-ascii", "iso-8859-1", "windows-1252")
                           else "utf-8", "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


def _parse(text: str, param_method: str) -> Optional[Meeting]:
    cal = icalendar.Calendar.from_ical(text)
    # RFC 6047 §2.4: the method parameter and METHOD must agree; the iCalendar body decides
    method = str(cal.get("METHOD", "") or param_method).strip().upper()
    if method not in METHODS:
        return None
    events = cal.walk("VEVENT")
    if not events:
        return None
    event = events[0]
    if any(name in _USED for name, _ in getattr(event, "errors", ())):
        return None  # icalendar keeps broken values as vBroken: a malformed part
    if "DTSTART" not in event or "UID" not in event:
        return None
    start = event.decoded("DTSTART")
    end: Optional[When] = event.decoded("DTEND") if "DTEND" in event else None
    if end is None and "DURATION" in event:
        end = start + event.decoded("DURATION")
    if not isinstance(start, dt.date) or (end is not None and not isinstance(end, dt.date)):
        return None
    return Meeting(method=method, uid=_text(event.get("UID")), summary=_text(event.get("SUMMARY", "")),
                   start=start, end=end, tzid=_tzid(event["DTSTART"], start),
                   location=_text(event.get("LOCATION", "")), organizer=_organizer(event.get("ORGANIZER")),
                   recurs="RRULE" in event or "RDATE" in event)


def _text(value: Any) -> str:
    """A property value safe to show: no control characters (a SUMMARY with CR LF stays one line), capped."""
    text = str(value if value is not None else "")
    return "".join(c if c.isprintable() else " " for c in text[: MAX_TEXT * 2]).strip()[:MAX_TEXT]


def _tzid(prop: Any, start: When) -> str:
    if not isinstance(start, dt.datetime) or start.tzinfo is None:
        return ""
    tzid = getattr(prop, "params", {}).get("TZID")
    if tzid:
        return _text(tzid)
    return "UTC" if start.utcoffset() == dt.timedelta(0) else _text(start.tzname() or "")


def _organizer(prop: Any) -> str:
    if prop is None:
        return ""
    address = str(prop)
    if address.lower().startswith("mailto:"):
        address = address[7:]
    name = _text(getattr(prop, "params", {}).get("CN", ""))
    address = _text(address)
    return f"{name} <{address}>" if name and name != address else address
