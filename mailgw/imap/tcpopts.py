"""TCP options on an IMAP connection's socket: no Nagle delay on our replies, no delayed ACK mid-command.

A client that writes a literal and its closing CRLF in two writes (Python's imaplib, imapclient)
has its CRLF held by its own Nagle algorithm until the literal is ACKed; a server that has
nothing to send back yet delays that ACK (Linux: up to 40 ms in interactive mode). The session
therefore asks for an immediate ACK (TCP_QUICKACK, which is not sticky) whenever a read leaves
a command incomplete, and sets TCP_NODELAY so its own short replies never wait (docs/imap.md).
"""

from __future__ import annotations

import socket
from typing import Any, Optional

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only; elsewhere a no-op


def raw_socket(transport: Any) -> Optional[socket.socket]:
    """The TCP socket under a transport (through a TLS wrapper), or None (tests' fake transports)."""
    for _ in range(4):
        if transport is None:
            return None
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def set_nodelay(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a UNIX socket behind a proxy): nothing to tune


def quickack(sock: Optional[socket.socket]) -> None:
    """ACK what has arrived now instead of after the delayed-ACK timer."""
    if sock is not None and _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass
