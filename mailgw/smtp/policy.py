"""Submission policy: who may send as whom, which recipients are local, and the message limits."""

from __future__ import annotations

from dataclasses import dataclass, field

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
