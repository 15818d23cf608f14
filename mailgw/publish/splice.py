"""Relay between two plain TCP sockets under the reactor's control, zero-copy with Linux splice(2).

Used by the forwarder once both ends are connected plain TCP transports (no TLS, nothing buffered).
Each direction starts by copying through Python (recv/send, cheapest for greetings and commands);
once a read fills COPY_SIZE the direction is bulk and moves socket -> pipe -> socket in the kernel,
so no byte enters Python and one reactor turn moves up to a pipe's worth (HAProxy's
`option splice-auto` heuristic). Backpressure: a source is read only when its direction holds
nothing unsent, and a full destination is watched for writability, so at most one read (or one
pipe) per direction is in flight. FIN is carried across as shutdown(SHUT_WR) once drained.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from typing import Any, Optional

from twisted.internet import error
from twisted.internet.interfaces import IReadWriteDescriptor, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

PIPE_SIZE = 1024 * 1024  # bytes in flight per direction (the default fs.pipe-max-size)
COPY_SIZE = 64 * 1024  # reads of this size through Python; a full one switches the direction to splice
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_BURST = 4  # splices per event per direction before yielding to other connections
AVAILABLE = hasattr(os, "splice")
# Shared, as posixbase's faildict does: building a Failure costs more than the close itself.
_DONE = Failure(error.ConnectionDone())  # type: ignore[no-untyped-call]
_RESET = (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EHOSTUNREACH, errno.ENETUNREACH)


def plain_socket(transport: Any) -> Optional[socket.socket]:
    """The socket of a plain, idle Twisted TCP transport, or None if it cannot be spliced."""
    if not AVAILABLE or ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False):
        return None
    handle = getattr(transport, "getHandle", None)
    sock = handle() if handle is not None else None
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return None
    if getattr(transport, "dataBuffer", b"") or getattr(transport, "_tempDataLen", 1) or getattr(transport, "producer", None):
        return None
    if getattr(transport, "disconnecting", True) or getattr(transport, "_writeDisconnecting", True):
        return None
    return sock


def try_start(reactor: Any, client: Any, target: Any, header: bytes, owner: Any) -> Optional["SpliceRelay"]:
    """A running relay between two Twisted transports, or None if either cannot be taken over."""
    if plain_socket(client) is None or plain_socket(target) is None:
        return None
    relay = SpliceRelay(reactor, _End.of_transport(client), _End.of_transport(target), owner)
    relay.start(header)
    return relay


def start_raw(reactor: Any, client: Any, target: socket.socket, header: bytes, owner: Any) -> "SpliceRelay":
    """A running relay between a Twisted client transport and a freshly connected target socket."""
    relay = SpliceRelay(reactor, _End.of_transport(client), _End(None, target), owner)
    relay.start(header)
    return relay


class _Direction:
    """One way: src socket -> dst socket; copied through Python until a read fills COPY_SIZE, then spliced."""

    def __init__(self, src: "_End", dst: "_End", counter: Any) -> None:
        self.src, self.dst, self.counter = src, dst, counter
        self.pipe_r = self.pipe_w = -1  # created when the direction turns out to be bulk
        self.size = 0
        self.pending = 0  # bytes in the pipe
        self.buffer: Optional[memoryview] = None  # copied bytes not yet sent
        self.eof = False  # src sent FIN
        self.done = False  # FIN passed on to dst
        self.moved = 0

    def open_pipe(self) -> None:
        try:
            self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # out of fds: go on copying through Python
            log.warn("splice unavailable: {error}", error=str(exc), event="publish.splice_unavailable")
            return
        try:
            fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # over fs.pipe-user-pages-soft: keep the default 64 KiB pipe
        self.size = fcntl.fcntl(self.pipe_w, _F_GETPIPE_SZ)

    def close(self) -> None:
        for fd in (self.pipe_r, self.pipe_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pipe_r = self.pipe_w = -1


@implementer(IReadWriteDescriptor)
class _End:
    """One socket under the relay: readable feeds its outgoing direction, writable drains its incoming one.

    `transport` is the Twisted transport that owned the socket (the client's, or a target's made by
    connectTCP), or None for a socket from connect.RawConnect, which the relay closes itself.
    """

    relay: "SpliceRelay"

    def __init__(self, transport: Any, sock: socket.socket) -> None:
        self.transport, self.sock = transport, sock
        self.fd = sock.fileno()
        self.outgoing: Optional[_Direction] = None
        self.incoming: Optional[_Direction] = None
        self.reading = self.writing = False

    @classmethod
    def of_transport(cls, transport: Any) -> "_End":
        return cls(transport, transport.getHandle())

    def take_over(self) -> None:
        if self.transport is not None:
            self.transport.stopReading()
            self.transport.stopWriting()
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            # Bytes are forwarded as they come; Nagle would add delays the endpoints never asked for.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def release(self, graceful: bool) -> None:
        if self.transport is None:
            if not graceful:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            self.sock.close()
        elif graceful:
            # Both FINs are exchanged and nothing is buffered: close now rather than through
            # loseConnection's extra reactor turn (twisted.internet.tcp.Connection.connectionLost).
            self.transport._shouldShutdown = False
            self.transport.connectionLost(_DONE)
        else:
            self.transport.abortConnection()

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "publish-splice"

    def doRead(self) -> None:
        assert self.outgoing is not None
        self.relay.pump(self.outgoing)

    def doWrite(self) -> None:
        assert self.incoming is not None
        self.relay.pump(self.incoming)

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw HUP/ERR on this socket (and has unregistered it)."""
        self.reading = self.writing = False
        self.relay.lost(self)

    def want_read(self, on: bool) -> None:
        if on != self.reading:
            self.reading = on
            (self.relay.reactor.addReader if on else self.relay.reactor.removeReader)(self)

    def want_write(self, on: bool) -> None:
        if on != self.writing:
            self.writing = on
            (self.relay.reactor.addWriter if on else self.relay.reactor.removeWriter)(self)


class SpliceRelay:
    """Both directions of one forwarded connection, moved by splice(2); `moved` = [in, out] bytes."""

    def __init__(self, reactor: Any, client: _End, target: _End, owner: Any) -> None:
        self.reactor, self.owner = reactor, owner
        self.client, self.target = client, target
        client.relay = target.relay = self
        rule = owner.rule
        self.inbound = _Direction(self.client, self.target, rule.bytes_in)
        self.outbound = _Direction(self.target, self.client, rule.bytes_out)
        self.client.outgoing = self.target.incoming = self.inbound
        self.target.outgoing = self.client.incoming = self.outbound
        self.finished = False
        self.last_active = reactor.seconds()

    @property
    def moved(self) -> list[int]:
        return [self.inbound.moved, self.outbound.moved]

    def start(self, header: bytes = b"") -> None:
        """Take both sockets over; `header` (PROXY protocol) goes to the target before any client byte."""
        for end in (self.client, self.target):
            end.take_over()
        self.target.want_read(True)
        if header:
            self.inbound.buffer = memoryview(header)
            self.pump(self.inbound)
        else:
            self.client.want_read(True)

    def pump(self, way: _Direction) -> None:
        """Move what can be moved now in one direction; arrange the next wake-up."""
        if self.finished:
            return
        try:
            for _ in range(_BURST):
                if way.buffer is not None:
                    n = way.dst.sock.send(way.buffer)
                    way.moved += n
                    way.counter.inc(n)
                    way.buffer = way.buffer[n:] if n < len(way.buffer) else None
                    if way.buffer is not None:
                        break
                while way.pending:
                    n = os.splice(way.pipe_r, way.dst.fd, way.pending, flags=_FLAGS)
                    way.pending -= n
                    way.moved += n
                    way.counter.inc(n)
                if way.eof:
                    break
                if way.pipe_r < 0:
                    data = way.src.sock.recv(COPY_SIZE)
                    if not data:
                        way.eof = True
                    else:
                        way.buffer = memoryview(data)
                        if len(data) == COPY_SIZE:  # a bulk transfer: splice from now on (HAProxy's splice-auto)
                            way.open_pipe()
                    continue
                n = os.splice(way.src.fd, way.pipe_w, way.size, flags=_FLAGS)
                if n == 0:
                    way.eof = True
                way.pending = n
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in _RESET:
                log.warn("splice failed: {error}", error=str(exc), event="publish.splice_error")
            self.abort()
            return
        self.last_active = self.reactor.seconds()
        if way.eof and not way.pending and way.buffer is None:
            self._pass_fin(way)
        else:
            self._arm(way)

    def _arm(self, way: _Direction) -> None:
        # Backpressure: read the source only when the pipe is empty; watch the destination while it is not.
        busy = bool(way.pending) or way.buffer is not None
        way.src.want_read(not busy and not way.eof)
        way.dst.want_write(busy)

    def _pass_fin(self, way: _Direction) -> None:
        way.src.want_read(False)
        way.dst.want_write(False)
        if not way.done:
            way.done = True
            try:
                way.dst.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self.inbound.done and self.outbound.done:
            self._finish(graceful=True)

    def lost(self, end: _End) -> None:
        """HUP/ERR on a socket: a reset aborts both; a clean hang-up counts as FIN from that side."""
        if self.finished:
            return
        if end.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.abort()
            return
        assert end.outgoing is not None and end.incoming is not None
        end.outgoing.eof = True
        self.pump(end.outgoing)
        if not self.finished and (end.incoming.pending or end.incoming.buffer is not None):
            self.pump(end.incoming)

    def abort(self) -> None:
        """Drop both connections now (reset, idle timeout, operator kick)."""
        if not self.finished:
            self._finish(graceful=False)

    def _finish(self, graceful: bool) -> None:
        self.finished = True
        for end in (self.client, self.target):
            end.want_read(False)
            end.want_write(False)
        self.inbound.close()
        self.outbound.close()
        self.target.release(graceful)
        self.client.release(graceful)
