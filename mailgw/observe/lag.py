"""The reactor-lag probe: how late a periodic timer fires, fed into `mailgw_reactor_lag_seconds`.

Everything mailgw serves (IMAP, SMTP, publishing, admin) shares one reactor thread, so any
callback that runs long delays every client (issue 12: a stall is an outage for everyone). A
timer asks to run every `interval` seconds; how much later than asked it actually runs is the
time the reactor was busy with something else. Each tick is one histogram observation, so
`histogram_quantile(0.99, rate(mailgw_reactor_lag_seconds_bucket[5m]))` shows the stalls a
client would have felt, and the `+Inf`/`le="0.1"` counts show how many ticks waited over 100 ms.
"""

from __future__ import annotations

from typing import Any, Optional

from prometheus_client import Histogram
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall

INTERVAL = 0.25


class ReactorLagService(Service):
    """Started and stopped with the gateway: one timer every `interval` seconds, its lateness observed."""

    def __init__(self, reactor: Any, histogram: Histogram, interval: float = INTERVAL) -> None:
        self.reactor = reactor
        self.histogram = histogram
        self.interval = interval
        self._call: Optional[IDelayedCall] = None
        self._due = 0.0

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()
        self._schedule()

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._due = self.reactor.seconds() + self.interval
        self._call = self.reactor.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        # A wall clock stepped backwards would make the timer look early: that is no lag.
        self.histogram.observe(max(0.0, self.reactor.seconds() - self._due))
        if self.running:
            self._schedule()
