"""Reply backpressure for command/response sessions: a peer that does not read its replies stops being read.

A session registers a `ReplyFlow` as the streaming producer of its transport. The transport
pauses it when its write buffer passes the high mark (Twisted's `bufferSize`, 64 KiB; the TLS
layer also while a handshake holds writes back) and resumes it once that buffer drained (the
low mark). While paused the session runs no further command, so pipelined input waits; once
that input passes `max_input` the transport stops reading, and it reads again when the input is
back under `resume_input` (security.md G38: pause reading past ~1 MiB of unsent replies; the
2 MB-of-EHLO attack of issue 12 grew a server by 265 MB without this).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class ReplyFlow:
    """One connection's write-side pause state and read-side gate."""

    def __init__(self, reactor: Any, on_writable: Callable[[], None], max_input: int,
                 resume_input: Optional[int] = None) -> None:
        self.reactor = reactor
        self.on_writable = on_writable  # called (in a later reactor turn) when replies may flow again
        self.max_input = max_input
        self.resume_input = max_input // 2 if resume_input is None else resume_input
        self.write_paused = False
        self.read_paused = False
        self.stopped = False
        self._transport: Any = None

    def attach(self, transport: Any) -> None:
        """Register as the transport's streaming producer (STARTTLS carries the registration over)."""
        self._transport = transport
        try:
            transport.registerProducer(self, True)
        except (AttributeError, RuntimeError):  # a test transport without IConsumer, or one already taken
            pass

    def detach(self) -> None:
        """Unregister before closing: a TLS transport's loseConnection waits for its producer to go."""
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.unregisterProducer()
            except (AttributeError, RuntimeError):
                pass

    def update_reading(self, buffered: int) -> None:
        """Stop or restart reading from the socket for `buffered` octets of input not yet run."""
        transport = self._transport
        if transport is None or self.stopped:
            return
        if not self.read_paused and buffered > self.max_input:
            self.read_paused = True
            transport.pauseProducing()
        elif self.read_paused and buffered <= self.resume_input:
            self.read_paused = False
            transport.resumeProducing()

    # IPushProducer: called by the transport about its write buffer
    def pauseProducing(self) -> None:
        self.write_paused = True

    def resumeProducing(self) -> None:
        if self.stopped:
            return
        self.write_paused = False
        self.reactor.callLater(0, self.on_writable)  # never re-enter the session from inside a write

    def stopProducing(self) -> None:
        self.stopped = True
        self.write_paused = True
