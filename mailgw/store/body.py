"""Opened messages (IMessageBody) and message sources, shared by the memory and the Maildir store.

A body is either already in memory (small messages, read ahead by the job that opened them)
or an open file read with pread in the store's thread pool. The file of a Maildir message never
changes once it is in new/ or cur/, and an open descriptor survives renames and unlinks, so a
body stays correct while other sessions change flags or expunge it.
"""

from __future__ import annotations

import os
from typing import IO, Any, Callable, Iterator, Optional, TypeVar

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mailgw.interfaces import IMessageBody, MessageFile
from mailgw.store.flags import to_crlf

T = TypeVar("T")
Runner = Callable[..., "Deferred[Any]"]  # runs a blocking function in the store's pool
CHUNK = 1 << 20  # copy and conversion chunk: bounds memory per message in flight


@implementer(IMessageBody)
class BytesBody:
    """A message already in memory."""

    __slots__ = ("data", "size")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> "Deferred[bytes]":
        return succeed(self.data[offset : offset + length])

    def read_all(self) -> "Deferred[bytes]":
        return succeed(self.data)

    def close(self) -> None:
        self.data = b""


@implementer(IMessageBody)
class FileBody:
    """A message file left open: reads are pread calls in the pool; close waits for reads in flight."""

    __slots__ = ("_file", "size", "_run", "_pending", "_closing")

    def __init__(self, file: IO[bytes], size: int, run: Runner) -> None:
        self._file: Optional[IO[bytes]] = file
        self.size = size
        self._run = run
        self._pending = 0
        self._closing = False

    def read(self, offset: int, length: int) -> "Deferred[bytes]":
        if self._file is None or self._closing:
            return succeed(b"")
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return succeed(b"")
        self._pending += 1
        d = self._run(pread_fully, self._file.fileno(), length, offset)
        d.addBoth(self._settled)
        return d

    def read_all(self) -> "Deferred[bytes]":
        return self.read(0, self.size)

    def _settled(self, result: T) -> T:
        self._pending -= 1
        if self._closing and not self._pending:
            self._release()
        return result

    def close(self) -> None:
        self._closing = True
        if not self._pending:
            self._release()

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()  # never while a pool thread still reads its descriptor
            self._file = None


def pread_fully(fd: int, length: int, offset: int) -> bytes:
    """`length` octets at `offset` (fewer only at end of file). Blocking: pool thread."""
    parts = []
    while length > 0:
        chunk = os.pread(fd, min(length, 16 * CHUNK), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def crlf_chunks(raw: Iterator[bytes]) -> Iterator[bytes]:
    """Bare LF -> CRLF over a chunked stream (RFC 3501 §2.3.4), including an LF that starts a chunk."""
    after_cr = False
    for chunk in raw:
        if not chunk:
            continue
        if chunk[:1] == b"\n" and after_cr:
            out = b"\n" + to_crlf(chunk[1:])
        else:
            out = to_crlf(chunk)
        after_cr = chunk[-1:] == b"\r"
        yield out


def raw_chunks(source: "bytes | MessageFile") -> Iterator[bytes]:
    """The octets of a message source, CHUNK at a time. Blocking for a file: pool thread."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start : start + CHUNK])
        return
    fd = source.fd
    owned = fd < 0
    if owned:
        fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while True:
            chunk = os.pread(fd, CHUNK, offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk
    finally:
        if owned:
            os.close(fd)


def message_chunks(source: "bytes | MessageFile") -> Iterator[bytes]:
    """What the store writes for a source: its octets in CRLF form, chunk by chunk."""
    return crlf_chunks(raw_chunks(source))


def source_size(source: "bytes | MessageFile") -> int:
    """Octets of a source as given (a lower bound of the stored CRLF size): for quota checks before writing."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    return source.size


def read_source(source: "bytes | MessageFile") -> bytes:
    """A whole source in CRLF form (the memory store keeps messages as bytes)."""
    return b"".join(message_chunks(source))
