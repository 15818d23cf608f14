"""Submission policy: who may send as whom, which recipients are local, and the message limits."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from typing import Optional

from mailgw.interfaces import Identity

SEND_AS_MODES = ("own", "any")


@dataclass(frozen=True)
class SubmissionPolicy:
    """The per-listener rules ([submission.NAME]); sizes in octets."""

    local_domains: frozenset[str] = field(default_factory=frozenset)
    send_as: str = "own"  # "own": MAIL FROM and From: must be one of Identity.addresses
    max_message_size: int = 35 * 1024 * 1024
    max_recipients: int = 100  # RFC 5321 §4.5.3.1.8: at least 100
    long_lines: str = "reject"  # "reject" (552 5.3.4) or "accept" lines over 998 octets
    allow_null_sender: bool = False
    max_errors: int = 20
    max_auth_failures: int = 3
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7
    max_header_bytes: int = 256 * 1024
    smtputf8: bool = True  # RFC 6531: carried to the smarthost, bounced (5.6.7) if it cannot take it

    def __post_init__(self) -> None:
        if self.send_as not in SEND_AS_MODES:
            raise ValueError(f"send_as must be one of {SEND_AS_MODES}")
        object.__setattr__(self, "local_domains", frozenset(d.lower().rstrip(".") for d in self.local_domains))

    def is_local(self, address: str) -> bool:
        return domain_of(address) in self.local_domains

    def may_send_as(self, identity: Identity, address: str) -> bool:
        """RFC 6409 §6.1 sender check (Postfix reject_authenticated_sender_login_mismatch)."""
        if self.send_as == "any":
            return True
        if address == "":
            return self.allow_null_sender
        return address.lower() in {a.lower() for a in identity.addresses}


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


class HeaderCollector:
    """Collects the header block (up to its blank line) as body chunks stream past, within a byte limit.

    Each chunk is searched only where the blank line can be (its last 3 octets before it plus the
    chunk), so a header sent one line per segment costs O(header), not O(header x lines).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray(b"\r\n")  # a virtual CRLF: a message may start with its blank line
        self._end = -1
        self.done = False

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk of the message; False once the header is known to exceed the limit."""
        start = max(0, len(self._buf) - 3)
        self._buf += chunk
        end = self._buf.find(b"\r\n\r\n", start)
        if end >= 0:
            self.done, self._end = True, end
            del self._buf[end + 4 :]
            return end <= self.limit  # header fields incl. the CRLF of the last one (end counts the virtual CRLF)
        if len(self._buf) - 3 > self.limit:  # no blank line can end the header within the limit any more
            self.done, self._buf = True, bytearray()
            return False
        return True

    def block(self) -> bytes:
        """The header fields, each CRLF-terminated, then an empty line (or what came, if the message ended first)."""
        if self._end >= 0:
            return bytes(self._buf[2 : self._end + 2]) + b"\r\n"
        return bytes(self._buf[2:])


def header_from_addresses(header_block: bytes) -> Optional[list[str]]:
    """Addresses in the From: header(s) of a raw header block; None if there is no From: at all."""
    text = header_block.decode("utf-8", "replace")
    fields: list[str] = []
    for line in text.split("\r\n"):
        if line == "":
            break
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += line  # RFC 5322 §2.2.3 unfolding
            continue
        fields.append(line)
    values = [f.partition(":")[2] for f in fields if f.partition(":")[0].strip().lower() == "from"]
    if not values:
        return None
    return [addr.lower() for _, addr in email.utils.getaddresses(values) if addr]
