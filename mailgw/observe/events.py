"""Stable security event names and the one-line `key=value` shape fail2ban and operators match on.

Every security-relevant log event carries `event=<name>` and the peer address; values are sanitised
(CR, LF, NUL and other non-printables escaped) so a client can never forge a log line.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

AUTH_FAILED = "auth_failed"
AUTH_OK = "auth_ok"
PLAINTEXT_AUTH_REFUSED = "plaintext_auth_refused"
STARTTLS_INJECTION = "starttls_injection"
TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
RELAY_REJECTED = "relay_rejected"
SENDER_MISMATCH = "sender_mismatch"
BARE_LF = "bare_lf"
FORWARD_DENY = "forward_deny"
FORWARD_ACCEPT = "forward_accept"  # a forwarded connection reached its target
FORWARD_REVOKED = "forward_revoked"  # an open connection closed because a reload narrowed the client set
FORWARD_UPSTREAM_FAILED = "forward_upstream_failed"
MANHOLE_LOGIN = "manhole_login"
CONFIG_RELOAD = "config_reload"
STORAGE_ERROR = "storage_error"


def sanitise(value: Any, limit: int = 128) -> str:
    """Printable ASCII only; everything else as \\xNN; long values cut with an ellipsis."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    out = []
    for char in text[:limit]:
        if char in "\\\"":
            out.append("\\" + char)
        elif 0x20 <= ord(char) < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    if len(text) > limit:
        out.append("...")
    return "".join(out)


def line(event: str, **fields: Any) -> str:
    """`event key=value ...` with quoted, sanitised values for free-text fields."""
    parts = [event]
    for key, value in fields.items():
        if value is None:
            continue
        text = sanitise(value)
        parts.append(f'{key}="{text}"' if key in ("user", "from", "to", "reason_text") or " " in text or not text else f"{key}={text}")
    return " ".join(parts)


def emit(log: Logger, event: str, level: str = "info", **fields: Any) -> None:
    """Log one security event: text is the fixed one-line shape; fields stay structured for JSON."""
    text = line(event, **fields)
    getattr(log, level)("{mailgw_line}", mailgw_line=text, event=event, **{k: v for k, v in fields.items() if k != "event"})
