"""Ending a session's connection: over TLS, send close_notify and close the socket without waiting for the peer's.

Twisted's TLS layer (twisted.protocols.tls.TLSMemoryBIOProtocol) answers `loseConnection` with a
close_notify and then keeps the TCP connection open until the peer sends its own close_notify
(`_shutdownTLS` closes the lower transport only once `SSL_shutdown` reports both directions
done). Most mail clients never send one after `* BYE`/`221`, so every LOGOUT/QUIT held the socket
until the session's forced abort 10 s later (issue 18 item 5). RFC 8446 §6.1 and RFC 5246 §7.2.1
let the closing side leave without waiting for the peer's close_notify, which is what Dovecot and
Postfix do: here the lower transport is closed right after ours has been written, so pending
replies and the alert are flushed and then a FIN follows.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.protocols.tls import TLSMemoryBIOProtocol

__all__ = ["close_transport"]


def _tls_layer(transport: Any) -> Optional[TLSMemoryBIOProtocol]:
    """The TLS protocol object of a transport: itself (implicit TLS) or the one STARTTLS put in (`_newtls`)."""
    if isinstance(transport, TLSMemoryBIOProtocol):
        return transport
    if getattr(transport, "TLS", False):  # a tcp.Server after startTLS routes through its .protocol
        inner = getattr(transport, "protocol", None)
        if isinstance(inner, TLSMemoryBIOProtocol):
            return inner
    return None


def close_transport(transport: Any) -> None:
    """loseConnection; over TLS also close the socket below once the close_notify is out (no wait for the peer's).

    The caller unregisters its producer first (a TLS transport defers its shutdown while one is
    registered) and keeps its own abort timer for a peer that never reads what is still buffered.
    """
    transport.loseConnection()
    tls = _tls_layer(transport)
    if tls is None or tls.transport is None:
        return
    # Only when the TLS layer has really written its close_notify: with cleartext still queued
    # (mid-handshake) or a producer registered, it sends the alert later and closes itself.
    if getattr(tls, "_appSendBuffer", None) or getattr(tls, "_producer", None) is not None:
        return
    tls.transport.loseConnection()  # flushes what is buffered (replies, close_notify), then FIN
