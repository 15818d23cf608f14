"""Cooperative pacing for per-command loops: yield to the reactor between items every few milliseconds.

One IMAP process also serves SMTP, publishing and the admin endpoints, so no command may hold the
reactor thread for long (issue 12: "no reactor stall over 100 ms from one client"). Loops over
messages, folders or patterns `await pacer.tick()` between items; the pacer lets the reactor run
whenever the current slice has used SLICE seconds, and reports a closed session so loops stop.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred

SLICE = 0.01  # seconds of work between two reactor turns


class Pacer:
    """Time-sliced cooperation for one command's loop on `reactor`."""

    def __init__(self, reactor: Any, closing: Callable[[], bool] = lambda: False, slice_: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reactor = reactor
        self.closing = closing
        self.slice = SLICE if slice_ is None else slice_
        self.clock = clock
        self.started = clock()
        self.yields = 0

    def due(self) -> bool:
        return self.clock() - self.started >= self.slice

    async def tick(self) -> bool:
        """Yield if the slice is used up; False once the session is closing (the loop should stop)."""
        if self.due():
            await self.pause()
        return not self.closing()

    async def pause(self) -> None:
        """Let the reactor run one turn (timers, other connections' I/O), then start a new slice."""
        d: Deferred[None] = Deferred()
        self.reactor.callLater(0, d.callback, None)
        await d
        self.yields += 1
        self.started = self.clock()
