"""Warnings that need the network: calendaring front ends that do not resolve (check-config, never start-up)."""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from .schema import Config


def resolves(host: str, timeout: float, getaddrinfo: Callable[..., object] = socket.getaddrinfo) -> Optional[bool]:
    """True/False, or None when the resolver did not answer within `timeout` (getaddrinfo has no timeout of its own)."""
    result: list[bool] = []

    def run() -> None:
        try:
            getaddrinfo(host, None, 0, socket.SOCK_STREAM)
            result.append(True)
        except (OSError, UnicodeError):
            result.append(False)

    worker = threading.Thread(target=run, name="mailgw-resolve", daemon=True)  # a hung lookup cannot hold exit
    worker.start()
    worker.join(timeout)
    return result[0] if result else None


def front_end_warnings(config: "Config", timeout: float = 2.0) -> list[str]:
    """One line per [imap.NAME] calendaring.front_end that does not resolve here (links would not work)."""
    out = []
    for name, imap in config.imap.items():
        if imap.calendaring is None:
            continue
        host = imap.calendaring.front_end
        found = resolves(host, timeout)
        if found is None:
            out.append(f"imap.{name}.calendaring.front_end: {host!r} did not resolve within {timeout:g}s "
                       "(clients must reach it to answer meeting requests)")
        elif not found:
            out.append(f"imap.{name}.calendaring.front_end: {host!r} does not resolve "
                       "(clients must reach it to answer meeting requests)")
    return out
