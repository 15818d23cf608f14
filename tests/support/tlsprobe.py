"""A blocking TLS client over a raw socket (ssl.MemoryBIO) that sees the TCP close apart from the close_notify.

An `ssl.SSLSocket` reports the server's close_notify as EOF and never shows whether the TCP
connection itself ended; this client feeds the raw bytes through an SSLObject, so a test can tell
"close_notify received" from "FIN (or RST) received", and it never sends a close_notify of its own
(what most mail clients do after LOGOUT/QUIT). Run it in a thread.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Optional


class TLSProbe:
    """A TLS session on `sock` (already connected, and past STARTTLS if any)."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, hostname: str = "localhost",
                 pending: bytes = b"") -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)
        self.plain = b""
        self.close_notify = False
        if pending:
            self.incoming.write(pending)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("connection closed during the handshake")
                self.incoming.write(data)
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def _drain(self) -> None:
        while not self.close_notify:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                self.close_notify = True
                return
            if not chunk:
                self.close_notify = True
                return
            self.plain += chunk

    def read_until(self, marker: bytes) -> bytes:
        """Plaintext up to and including `marker`; what follows stays buffered."""
        while marker not in self.plain:
            self._drain()
            if marker in self.plain or self.close_notify:
                break
            data = self.sock.recv(65536)
            if not data:
                break
            self.incoming.write(data)
            self._drain()
        head, sep, rest = self.plain.partition(marker)
        self.plain = rest
        return head + sep

    def wait_tcp_close(self, timeout: float) -> Optional[float]:
        """time.monotonic() when the server's FIN or RST arrived (reading on, never answering its alert), or None."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return time.monotonic()
                self.incoming.write(data)
                self._drain()
        except ConnectionResetError:
            return time.monotonic()
        except socket.timeout:
            return None
        finally:
            self.sock.close()
