"""Registry of open client sessions per listener: the manhole lists and kicks them, metrics count them."""

from __future__ import annotations

from typing import Optional

from zope.interface import implementer

from mailgw.interfaces import ISessionRegistry


@implementer(ISessionRegistry)
class SessionRegistry:
    """Sessions are any objects with `peer`, `user` and `kick()`; registered in insertion order."""

    def __init__(self) -> None:
        self._sessions: dict[int, tuple[str, str, object]] = {}

    def add(self, listener: str, protocol: str, session: object) -> None:
        self._sessions[id(session)] = (listener, protocol, session)

    def remove(self, session: object) -> None:
        self._sessions.pop(id(session), None)

    def sessions(self, listener: Optional[str] = None) -> list[object]:
        return [s for (name, _, s) in self._sessions.values() if listener is None or name == listener]

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for name, protocol, _ in self._sessions.values():
            out[(name, protocol)] = out.get((name, protocol), 0) + 1
        return out
