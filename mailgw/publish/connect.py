"""Non-blocking connect of a plain socket to a rule's target (an IP literal), for the splice relay.

The relay needs only the socket, so this skips Twisted's Connector/Client/Deferred machinery for
each forwarded connection: one `connect()`, one writability wake-up, one SO_ERROR check.
Targets given as host names go through `reactor.connectTCP` instead (forwarder.tcp_connector).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer


def family_of(host: str) -> Optional[int]:
    """AF_INET / AF_INET6 for an IP literal, None for a host name."""
    try:
        return socket.AF_INET if ipaddress.ip_address(host).version == 4 else socket.AF_INET6
    except ValueError:
        return None


def failure_kind(code: int) -> str:
    """The `reason=` of a forward_upstream_failed event for an errno."""
    if code == errno.ECONNREFUSED:
        return "refused"
    if code == errno.ETIMEDOUT:
        return "timeout"
    return errno.errorcode.get(code, str(code)).lower()


@implementer(IWriteDescriptor)
class RawConnect:
    """One connection attempt; calls `connected(sock)` or `failed(kind)` exactly once, unless stopped."""

    def __init__(self, reactor: Any, family: int, host: str, port: int, timeout: float,
                 connected: Callable[[socket.socket], None], failed: Callable[[str], None]) -> None:
        self.reactor, self.connected, self.failed = reactor, connected, failed
        # SOCK_NONBLOCK at creation: one syscall less than setblocking(False) afterwards.
        self.sock: Optional[socket.socket] = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.fd = self.sock.fileno()
        self._timer: Any = None
        code = self.sock.connect_ex((host, port))
        if code in (0, errno.EINPROGRESS):
            reactor.addWriter(self)
            self._timer = reactor.callLater(timeout, self._give_up, "timeout")
        else:  # reported from the reactor, after the caller has finished setting up
            self._timer = reactor.callLater(0, self._give_up, failure_kind(code))

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "publish-connect"

    def doWrite(self) -> None:
        self._settle()

    def connectionLost(self, reason: Failure) -> None:
        """epoll reported ERR/HUP (a refused connect): the same check as writability."""
        self._settle()

    def _settle(self) -> None:
        sock = self._release()
        if sock is None:
            return
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            sock.close()
            self.failed(failure_kind(code))
        else:
            self.connected(sock)

    def _give_up(self, kind: str) -> None:
        self._timer = None
        sock = self._release()
        if sock is not None:
            sock.close()
            self.failed(kind)

    def _release(self) -> Optional[socket.socket]:
        sock, self.sock = self.sock, None
        if sock is None:
            return None
        self.reactor.removeWriter(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return sock

    def stopConnecting(self) -> None:
        """The client went away first: abandon the attempt silently."""
        sock = self._release()
        if sock is not None:
            sock.close()
