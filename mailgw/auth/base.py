"""What auth backends share: the reasoned password check and address resolution helpers."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from mailgw.auth.names import split_login
from mailgw.errors import AuthUnavailable
from mailgw.interfaces import Identity

log = Logger()

_T = TypeVar("_T")

# A backend's answer to a password check: the identity, or why not (for logs only, never the client).
Verdict = Union[Identity, str]

UNKNOWN_USER = "unknown_user"
BAD_PASSWORD = "bad_password"
DISABLED = "disabled"


class IReasonedDirectory(Interface):
    """An IDirectory that can also say *why* a password check failed (unknown user, wrong password)."""

    def check_password(login: str, password: str) -> "Deferred[Verdict]":
        """Identity on success, else one of UNKNOWN_USER / BAD_PASSWORD / DISABLED; AuthUnavailable on outage."""


def verdict_identity(verdict: Verdict) -> Identity | None:
    """The identity in a verdict, or None."""
    return verdict if isinstance(verdict, Identity) else None


def resolve_login(login: str, by_name: "dict[str, _T]", by_address: "dict[str, _T]") -> "_T | None":
    """Find an account by uid, by address, or by the uid in `DOMAIN\\uid` / `uid@domain` (case-insensitive).

    `by_name` and `by_address` are keyed by casefolded uid and casefolded address.
    """
    key = login.strip().casefold()
    found = by_name.get(key)
    if found is None:
        found = by_address.get(key)
    if found is None:
        _, local, _ = split_login(key)
        found = by_name.get(local)
    return found


async def first_found(backends: Sequence[Any], ask: Callable[[Any], Awaitable[Optional[_T]]]) -> Optional[_T]:
    """The first non-None `await ask(backend)` in order; AuthUnavailable if none found and any was down.

    A backend raising something other than AuthUnavailable (a bug) is logged and counts as down,
    so it can never turn into a success or a "Server error" reply.
    """
    outage: Optional[AuthUnavailable] = None
    for backend in backends:
        try:
            found = await ask(backend)
        except AuthUnavailable as e:
            outage = e
            continue
        except Exception as e:
            log.failure("backend {backend} failed", Failure(), backend=getattr(backend, "name", "?"),
                        event="auth.backend_error")
            outage = AuthUnavailable(detail=f"{getattr(backend, 'name', '?')}: {e!r}")
            continue
        if found is not None:
            return found
    if outage is not None:
        raise outage  # a backend that is down might have known the name
    return None
