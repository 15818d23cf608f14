"""Delivery status notifications (RFC 3464 multipart/report) for bounced recipients."""

from __future__ import annotations

import email.utils
import secrets
from typing import Any

_HEADER_CAP = 64 * 1024


def original_headers(path: str) -> bytes:
    """The header block of a queued message (capped), for the text/rfc822-headers part (call it in a pool thread)."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_CAP)
    end = head.find(b"\r\n\r\n")
    return head[: end + 2] if end >= 0 else head


def _status(code: int, text: str) -> str:
    """Enhanced status from the reply text, else a generic one by class (RFC 3463)."""
    parts = text.split()
    for word in parts[:3]:
        bits = word.split(".")
        if len(bits) == 3 and all(b.isdigit() for b in bits) and bits[0] in ("4", "5"):
            return "5." + bits[1] + "." + bits[2]
    return "5.0.0" if code >= 500 else "4.4.7"


def build_dsn(hostname: str, sender: str, failures: dict[str, tuple[int, str]], headers: bytes, queue_id: str,
              arrival: float, now: float, expired: bool) -> bytes:
    """A CRLF DSN to `sender` listing each failed recipient with its Diagnostic-Code."""
    boundary = f"=_mailgw_{secrets.token_hex(8)}"
    date = email.utils.formatdate(now)
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(4)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {hostname}.",
        "",
        "Your message could not be delivered to one or more recipients."
        + (" It stayed in the queue longer than the maximum queue age." if expired else ""),
        "",
    ]
    for rcpt, (code, text) in failures.items():
        lines.append(f"<{rcpt}>: {' '.join(str(text or code).split())[:900]}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Mailgw-Queue-ID: {queue_id}",
        f"Arrival-Date: {email.utils.formatdate(arrival)}",
    ]
    for rcpt, (code, text) in failures.items():
        lines += [
            "",
            f"Final-Recipient: rfc822; {rcpt}",
            "Action: failed",
            f"Status: {'4.4.7' if expired and code < 500 else _status(code, text)}",
        ]
        if code:
            lines.append(f"Diagnostic-Code: smtp; {' '.join(text.split())[:900]}")
        else:
            lines.append(f"Diagnostic-Code: X-mailgw; {' '.join(text.split())[:900]}")
        lines.append(f"Last-Attempt-Date: {date}")
    lines += ["", f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    body = "\r\n".join(lines).encode("utf-8") + b"\r\n" + headers
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + f"\r\n--{boundary}--\r\n".encode()


def is_null(sender: Any) -> bool:
    return not sender
