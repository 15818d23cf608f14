"""What auth backends share: the reasoned password check and address resolution helpers."""

from __future__ import annotations

from typing import Union

from twisted.internet.defer import Deferred
from zope.interface import Interface

from mailgw.interfaces import Identity

# A backend's answer to a password check: the identity, or why not (for logs only, never the client).
Verdict = Union[Identity, str]

UNKNOWN_USER = "unknown_user"
BAD_PASSWORD = "bad_password"
DISABLED = "disabled"


class IReasonedDirectory(Interface):
    """An IDirectory that can also say *why* a password check failed (unknown user, wrong password)."""

    def check_password(login: str, password: str) -> "Deferred[Verdict]":  # type: ignore[empty-body]
        """Identity on success, else one of UNKNOWN_USER / BAD_PASSWORD / DISABLED; AuthUnavailable on outage."""


def verdict_identity(verdict: Verdict) -> Identity | None:
    """The identity in a verdict, or None."""
    return verdict if isinstance(verdict, Identity) else None
