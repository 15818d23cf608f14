"""The reactor-lag probe: a blocked reactor moves `mailgw_reactor_lag_seconds`' buckets, and twistd's /metrics shows it."""

from __future__ import annotations

import re
import time
import urllib.request

from prometheus_client import CollectorRegistry, Histogram
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.observe.lag import ReactorLagService
from tests.admin.helpers_ops import tempdir, until, write_config
from tests.support.gateway import Gateway

NAME = "mailgw_reactor_lag_seconds"


def histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram(NAME, "lag", registry=registry, buckets=(0.001, 0.1, 0.25, 0.5, 1.0, 2.5))


def bucket(registry: CollectorRegistry, le: str) -> float:
    return registry.get_sample_value(NAME + "_bucket", {"le": le}) or 0.0


class ClockTests(SynchronousTestCase):
    def test_stall_lands_in_its_bucket(self) -> None:
        """On time, ticks land in the lowest bucket; a 0.6 s jump past a due tick is one observation of 0.6 s."""
        registry, lag = histogram()
        clock = task.Clock()
        service = ReactorLagService(clock, lag, interval=0.25)
        service.startService()
        clock.pump([0.25] * 4)
        self.assertEqual(bucket(registry, "0.001"), 4)
        clock.advance(0.85)  # the reactor was busy: the tick due 0.25 s in ran 0.6 s late
        self.assertEqual(bucket(registry, "0.5"), 4)
        self.assertEqual(bucket(registry, "1.0"), 5)
        self.assertAlmostEqual(registry.get_sample_value(NAME + "_sum"), 0.6)
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(registry.get_sample_value(NAME + "_count"), 5)


class RealReactorTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_blocking_call_is_measured(self):
        """A callback that blocks the real reactor 0.6 s makes the next tick about 0.35 s late (0.25 < lag <= 2.5)."""
        registry, lag = histogram()
        service = ReactorLagService(reactor, lag, interval=0.25)
        service.startService()
        self.addCleanup(service.stopService)
        reactor.callLater(0, time.sleep, 0.6)  # the stall under test: blocks the reactor thread on purpose
        yield until(lambda: registry.get_sample_value(NAME + "_count") >= 1)
        self.assertEqual(bucket(registry, "0.25"), 0)
        self.assertEqual(bucket(registry, "2.5"), 1)
        self.assertGreaterEqual(registry.get_sample_value(NAME + "_sum"), 0.3)


class TwistdMetricsTests(SynchronousTestCase):
    def test_metrics_endpoint_shows_lag(self) -> None:
        """`/metrics` of a running twistd has the mailgw_reactor_lag_seconds histogram, counting ticks."""
        path, _ = write_config(self, '[admin]\nhttp = { listen = "tcp:0:interface=127.0.0.1" }\n')
        gateway = Gateway(path, tempdir(self)).start(expect=1)
        self.addCleanup(gateway.stop)
        url = f"http://127.0.0.1:{gateway.port('admin.http.listen')}/metrics"
        deadline = time.monotonic() + 20
        count = 0.0
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            self.assertIn(f"# TYPE {NAME} histogram", text)
            self.assertIn(f'{NAME}_bucket{{le="0.1"}}', text)
            count = float(re.search(rf"^{NAME}_count (\S+)$", text, re.M).group(1))
            if count >= 2:
                break
            time.sleep(0.25)  # polling the live process for its next tick (a condition, bounded by the deadline)
        self.assertGreaterEqual(count, 2)
