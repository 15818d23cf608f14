"""Meeting requests as Outlook, Google Calendar and Thunderbird send them (RFC 5546 §4 examples inside)."""

from __future__ import annotations

import base64

VTIMEZONE_BERLIN = b"""BEGIN:VTIMEZONE\r
TZID:W. Europe Standard Time\r
BEGIN:STANDARD\r
DTSTART:16010101T030000\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r
END:STANDARD\r
BEGIN:DAYLIGHT\r
DTSTART:16010101T020000\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r
END:DAYLIGHT\r
END:VTIMEZONE\r
"""


def vcalendar(method: bytes = b"REQUEST", uid: bytes = b"040000008200E00074C5B7101A82E00800000000A1B2C3D4",
              summary: bytes = b"Quarterly review", extra: bytes = b"") -> bytes:
    """An Outlook/Exchange-style VCALENDAR with a Windows time zone (RFC 5546 §4.2.1 shape)."""
    return (b"BEGIN:VCALENDAR\r\nMETHOD:" + method + b"\r\nPRODID:Microsoft Exchange Server 2010\r\nVERSION:2.0\r\n"
            + VTIMEZONE_BERLIN
            + b"BEGIN:VEVENT\r\nORGANIZER;CN=Alice Example:mailto:alice@example.com\r\n"
            b"ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=Bob:mailto:bob@example.com\r\n"
            b"UID:" + uid + b"\r\nSUMMARY;LANGUAGE=en-US:" + summary + b"\r\n"
            b"DTSTART;TZID=W. Europe Standard Time:20261210T140000\r\n"
            b"DTEND;TZID=W. Europe Standard Time:20261210T150000\r\n"
            b"DTSTAMP:20261201T100000Z\r\nSEQUENCE:0\r\nLOCATION;LANGUAGE=en-US:Room 4.12\r\n" + extra
            + b"END:VEVENT\r\nEND:VCALENDAR\r\n")


HEAD = (b"Received: from mx.example.com by mail.example.com; Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        b"From: Alice Example <alice@example.com>\r\nTo: Bob <bob@example.com>\r\n"
        b"Subject: Quarterly review\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <invite-1@example.com>\r\n")


def outlook() -> bytes:
    """Outlook/Exchange: multipart/alternative of text, html and text/calendar; method=REQUEST (base64)."""
    cal = base64.encodebytes(vcalendar()).replace(b"\n", b"\r\n")
    return (HEAD + b"Content-Type: multipart/alternative;\r\n\tboundary=\"_000_outlook_\"\r\nMIME-Version: 1.0\r\n"
            b"Content-class: urn:content-classes:calendarmessage\r\n\r\n"
            b"--_000_outlook_\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\n\r\nQuarterly review agenda.\r\n\r\n"
            b"--_000_outlook_\r\nContent-Type: text/html; charset=\"us-ascii\"\r\n\r\n<html><body>Quarterly review agenda.</body></html>\r\n\r\n"
            b"--_000_outlook_\r\nContent-Type: text/calendar; charset=\"utf-8\"; method=REQUEST\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + cal + b"\r\n--_000_outlook_--\r\n")


def google() -> bytes:
    """Google Calendar: mixed( alternative(text, html, text/calendar method=REQUEST), invite.ics application/ics )."""
    cal = (b"BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\nVERSION:2.0\r\n"
           b"CALSCALE:GREGORIAN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nDTSTART:20261210T130000Z\r\n"
           b"DTEND:20261210T140000Z\r\nDTSTAMP:20261201T100000Z\r\n"
           b"ORGANIZER;CN=alice@example.com:mailto:alice@example.com\r\nUID:7kukuqrfedlm2f9t@google.com\r\n"
           b"SUMMARY:Stand-up\r\nLOCATION:https://meet.example.com/abc\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    b64 = base64.encodebytes(cal).replace(b"\n", b"\r\n")
    return (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"000000000000mixed\"\r\n\r\n"
            b"--000000000000mixed\r\nContent-Type: multipart/alternative; boundary=\"000000000000alt\"\r\n\r\n"
            b"--000000000000alt\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\nYou have been invited.\r\n"
            b"--000000000000alt\r\nContent-Type: text/html; charset=\"UTF-8\"\r\n\r\n<p>You have been invited.</p>\r\n"
            b"--000000000000alt\r\nContent-Type: text/calendar; charset=\"UTF-8\"; method=REQUEST\r\n"
            b"Content-Transfer-Encoding: 7bit\r\n\r\n" + cal + b"\r\n--000000000000alt--\r\n"
            b"--000000000000mixed\r\nContent-Type: application/ics; name=\"invite.ics\"\r\n"
            b"Content-Disposition: attachment; filename=\"invite.ics\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + b64 + b"--000000000000mixed--\r\n")


def thunderbird_attachment() -> bytes:
    """Thunderbird (Lightning): text/plain and an invite.ics attachment, text/calendar method=REQUEST."""
    return (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"------------tb\"\r\n\r\n"
            b"This is a multi-part message in MIME format.\r\n--------------tb\r\n"
            b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            b"Invitation to Quarterly review\r\n\r\n--------------tb\r\n"
            b"Content-Type: text/calendar; charset=UTF-8; method=REQUEST; name=\"invite.ics\"\r\n"
            b"Content-Disposition: attachment; filename=\"invite.ics\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + vcalendar(uid=b"thunderbird-uid-1") + b"\r\n--------------tb--\r\n")


def bare(method: bytes = b"REQUEST") -> bytes:
    """A bare text/calendar message (RFC 6047 §4.1 minimal iMIP), 8bit with a non-ASCII SUMMARY."""
    return (HEAD + b"MIME-Version: 1.0\r\nContent-Type: text/calendar; method=" + method + b"; charset=UTF-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + vcalendar(method, summary="Besprechung über Q4".encode()))


def cancel() -> bytes:
    """An Outlook CANCEL (RFC 5546 §4.2.5)."""
    return outlook().replace(b"method=REQUEST", b"method=CANCEL").replace(
        base64.encodebytes(vcalendar()).replace(b"\n", b"\r\n"),
        base64.encodebytes(vcalendar(b"CANCEL", summary=b"Canceled: Quarterly review")).replace(b"\n", b"\r\n"))


def malformed() -> bytes:
    """A text/calendar part with a broken DTSTART."""
    return bare().replace(b"DTSTART;TZID=W. Europe Standard Time:20261210T140000", b"DTSTART:2026XX")


def plain_mail() -> bytes:
    """Not a meeting request: multipart/alternative text + html."""
    return (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--b--\r\n")


def publish() -> bytes:
    """A METHOD:PUBLISH calendar (a shared calendar, not a meeting request)."""
    return bare().replace(b"method=REQUEST", b"method=PUBLISH").replace(b"METHOD:REQUEST", b"METHOD:PUBLISH")
