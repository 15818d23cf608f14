"""systemd service notification: sd_notify datagrams (READY, RELOADING, STOPPING, WATCHDOG) and the watchdog loop.

Twisted has no sd_notify (notes/ecosystem.md §2 pitfall 3): the protocol is one AF_UNIX datagram
of newline-separated `KEY=value` assignments to `$NOTIFY_SOCKET`, where a leading `@` names the
abstract namespace. The caller passes the environment in; nothing here reads `os.environ`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Mapping, Optional

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class Notifier:
    """Sends sd_notify assignments to one socket; a no-op when there is none (not run by systemd)."""

    def __init__(self, address: Optional[str]) -> None:
        self.address: Optional[str | bytes] = None
        if address:
            self.address = b"\0" + address[1:].encode() if address.startswith("@") else address
        self._socket: Optional[socket.socket] = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Notifier":
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram; False (logged once per failure) if it cannot be sent."""
        if self.address is None:
            return False
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        try:
            self._socket.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            log.warn("sd_notify to {address} failed: {error}", address=str(self.address), error=str(exc), event="systemd.notify_failed")
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *((f"STATUS={status}",) if status else ()))

    def reloading(self) -> bool:
        # systemd >= 253 (Type=notify-reload) wants MONOTONIC_USEC with RELOADING=1; older ones ignore it.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str], pid: Optional[int] = None) -> Optional[float]:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is asked for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wanted_pid = environ.get("WATCHDOG_PID", "")
    if wanted_pid and wanted_pid != str(pid if pid is not None else os.getpid()):
        return None
    return int(usec) / 2_000_000


class SystemdNotifyService(Service):
    """READY=1 once `ready` fires (every listener bound), WATCHDOG=1 while running, STOPPING=1 at shutdown.

    `ready` is a zero-argument callable returning a Deferred (MailgwService.ready); `reactor`
    drives the watchdog LoopingCall. If binding fails the Deferred errbacks and READY is never sent,
    so systemd reports the start-up failure.
    """

    def __init__(self, notifier: Notifier, ready: Any, reactor: Any, watchdog: Optional[float] = None) -> None:
        self.notifier = notifier
        self._ready = ready
        self.reactor = reactor
        self.watchdog_seconds = watchdog
        self._loop: Optional[LoopingCall] = None

    def startService(self) -> None:
        super().startService()
        if self.watchdog_seconds:
            self._loop = LoopingCall(self.notifier.watchdog)
            self._loop.clock = self.reactor
            self._loop.start(self.watchdog_seconds, now=True)
        self._ready().addCallbacks(self._sendReady, self._notReady)

    def _sendReady(self, _: object) -> None:
        if self.running:
            self.notifier.ready("serving")
            log.info("all listeners bound; ready", event="systemd.ready")

    def _notReady(self, failure: Any) -> None:
        log.failure("a listener failed to bind; not ready", failure, event="systemd.not_ready")

    def stopService(self) -> None:
        super().stopService()
        self.notifier.stopping()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
