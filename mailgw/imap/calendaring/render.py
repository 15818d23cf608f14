"""The summary a meeting request is shown with: what, when (event time zone and UTC), where, who, the link."""

from __future__ import annotations

import datetime as dt
import html
from typing import Optional

from mailgw.imap.calendaring.detect import Meeting, When

_TITLE = {"REQUEST": "Meeting request", "CANCEL": "Meeting cancelled", "COUNTER": "New time proposed"}
_ACTION = {"REQUEST": "Open it on the web to accept, decline or propose a new time:",
           "CANCEL": "Open it on the web to remove it from your calendar:",
           "COUNTER": "Open it on the web to accept or decline the proposal:"}
UTC = dt.timezone.utc


def _day(d: dt.date) -> str:
    return d.strftime("%a %d %b %Y")  # C locale: twistd does not set one


def _span(start: dt.datetime, end: Optional[dt.datetime]) -> str:
    text = f"{_day(start)} {start:%H:%M}"
    if end is None:
        return text
    return text + (f" - {end:%H:%M}" if end.date() == start.date() else f" - {_day(end)} {end:%H:%M}")


def when_lines(m: Meeting) -> list[str]:
    """One line in the event's own time zone, one in UTC (all-day and floating times have no UTC)."""
    start, end = m.start, m.end
    if not isinstance(start, dt.datetime):  # VALUE=DATE: all day, DTEND exclusive (RFC 5545 §3.6.1)
        last = (end - dt.timedelta(days=1)) if isinstance(end, dt.date) and not isinstance(end, dt.datetime) else start
        return [f"{_day(start)}{' - ' + _day(last) if last > start else ''} (all day)"]
    end_dt = end if isinstance(end, dt.datetime) else None
    if start.tzinfo is None:
        return [f"{_span(start, end_dt)} (floating time: the same clock time everywhere)"]
    utc = _span(start.astimezone(UTC), end_dt.astimezone(UTC) if end_dt is not None and end_dt.tzinfo else None) + " UTC"
    if m.tzid == "UTC":
        return [utc]
    local = _span(start, end_dt.astimezone(start.tzinfo) if end_dt is not None and end_dt.tzinfo else end_dt)
    return [f"{local} ({m.tzid})", utc]


def rows(m: Meeting) -> list[tuple[str, list[str]]]:
    out = [("When", when_lines(m) + (["(recurring)"] if m.recurs else []))]
    if m.location:
        out.append(("Where", [m.location]))
    if m.organizer:
        out.append(("Organizer", [m.organizer]))
    return out


def title(m: Meeting) -> str:
    return f"{_TITLE[m.method]}: {m.summary or '(no subject)'}"


def plain_text(m: Meeting, url: str) -> str:
    lines = [title(m), ""]
    for label, values in rows(m):
        lines.append(f"{label + ':':<11}{values[0]}")
        lines += [" " * 11 + v for v in values[1:]]
    lines += ["", _ACTION[m.method], url, ""]
    return "\r\n".join(lines)


def html_text(m: Meeting, url: str) -> str:
    e = html.escape
    cells = "".join(f"<tr><th align=\"left\" valign=\"top\">{e(label)}</th><td>{'<br>'.join(e(v) for v in values)}</td></tr>\r\n"
                    for label, values in rows(m))
    return ("<!DOCTYPE html>\r\n<html><body>\r\n"
            f"<p><b>{e(title(m))}</b></p>\r\n<table>\r\n{cells}</table>\r\n"
            f"<p>{e(_ACTION[m.method])}<br>\r\n<a href=\"{e(url, quote=True)}\">{e(url)}</a></p>\r\n"
            "</body></html>\r\n")


__all__ = ["When", "html_text", "plain_text", "title", "when_lines"]
