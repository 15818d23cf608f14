"""Publishing targets' reachability: periodic TCP checks (rise/fall, transition lines) and their place in /health."""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from mailgw.publish import ClientSet, PublishRule, RuleSettings
from mailgw.publish.health import TargetHealthService, TargetProbe
from tests.admin.helpers_ops import port_of, start_gateway, write_config

from .support import closed_port, until


def make_rule(port: int, name: str = "r") -> PublishRule:
    return PublishRule(RuleSettings(name=name, listen="tcp:0", target_host="127.0.0.1", target_port=port,
                                    connect_timeout=2.0), ClientSet.any(), reactor)


class Counting(Factory):
    """A target that counts the connections it accepted."""

    def __init__(self) -> None:
        self.count = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        self.count += 1
        return Protocol()


class ProbeStateTests(SynchronousTestCase):
    """The rise/fall state machine, fed results directly."""

    def probe(self) -> TargetProbe:
        return TargetProbe(make_rule(1), Clock(), interval=1.0)

    def test_first_result_decides_then_fall_and_rise(self) -> None:
        """The first check sets the state; it takes FALL failures in a row to go down and RISE successes to come back."""
        p = self.probe()
        self.assertIsNone(p.report()["ok"])
        p._result(True, "reachable")
        self.assertIs(p.up, True)
        p._result(False, "refused")
        p._result(False, "refused")
        p._result(True, "reachable")  # the streak is broken
        p._result(False, "refused")
        p._result(False, "refused")
        self.assertIs(p.up, True)
        p._result(False, "timeout")
        self.assertEqual((p.up, p.detail), (False, "timeout"))
        p._result(True, "reachable")
        self.assertIs(p.up, False)
        p._result(True, "reachable")
        self.assertEqual(p.report(), {"name": "publish.r", "target": "127.0.0.1:1", "ok": True, "detail": "reachable",
                                      "checked_seconds_ago": 0.0})


class ProbeTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    @defer.inlineCallbacks
    def test_checks_follow_the_target(self) -> None:
        """A listening target is up after one check; once it stops listening it goes down after three refused checks, logged once."""
        target = Counting()
        port = reactor.listenTCP(0, target, interface="127.0.0.1")
        probe = TargetProbe(make_rule(port.getHost().port), reactor, interval=0.05)
        probe.start()
        self.addCleanup(probe.stop)
        yield until(reactor, lambda: probe.up is True)
        self.assertGreaterEqual(target.count, 1)
        yield port.stopListening()
        yield until(reactor, lambda: probe.up is False)
        self.assertEqual(probe.detail, "refused")
        changes = [e["event"] for e in self.events if e.get("event", "").startswith("publish.target_")]
        self.assertEqual(changes, ["publish.target_up", "publish.target_down"])

    @defer.inlineCallbacks
    def test_reload_moves_the_check(self) -> None:
        """A reload that gives the rule a new target starts that target's state afresh: its first check decides."""
        target = Counting()
        port = reactor.listenTCP(0, target, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        rule = make_rule(port.getHost().port)
        probe = TargetProbe(rule, reactor, interval=1.0)
        yield probe.check()
        self.assertIs(probe.up, True)
        dead = closed_port()
        rule.reconfigure(RuleSettings(name="r", listen="tcp:0", target_host="127.0.0.1", target_port=dead,
                                      connect_timeout=2.0), ClientSet.any())
        yield probe.check()  # one check, not FALL: the old target's "up" says nothing about the new one
        self.assertEqual((probe.up, probe.detail), (False, "refused"))
        self.assertEqual(probe.report()["target"], f"127.0.0.1:{dead}")

    @defer.inlineCallbacks
    def test_stop_leaves_nothing_running(self) -> None:
        """Stopping the service stops the loop; no further connection reaches the target."""
        target = Counting()
        port = reactor.listenTCP(0, target, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        service = TargetHealthService([make_rule(port.getHost().port)], reactor, interval=0.05)
        service.startService()
        yield until(reactor, lambda: service.probes["r"].up is True)
        service.stopService()
        seen = target.count
        yield until(reactor, lambda: False, timeout=0.3).addErrback(lambda _: None)  # six intervals pass
        self.assertEqual(target.count, seen)


class HealthEndpointTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_health_shows_each_rule(self) -> None:
        """/health lists each publishing rule's target; a refused target makes it "degraded" with 200, and requests open no connections."""
        target = Counting()
        live = reactor.listenTCP(0, target, interface="127.0.0.1")
        self.addCleanup(live.stopListening)
        dead = closed_port()
        path, _ = write_config(self, f"""
[publish.up]
listen = "tcp:0:interface=127.0.0.1"
target = "127.0.0.1:{live.getHost().port}"
clients = ["any"]

[publish.gone]
listen = "tcp:0:interface=127.0.0.1"
target = "127.0.0.1:{dead}"
clients = ["any"]

[admin]
http = {{ listen = "tcp:0:interface=127.0.0.1" }}
""")
        gateway = start_gateway(self, path)
        probes = gateway.extras["publish_health"].probes
        yield until(reactor, lambda: all(p.up is not None for p in probes.values()))
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        url = f"http://127.0.0.1:{port_of(gateway, 'admin.http.listen')}/health"
        checks = target.count
        for _ in range(3):
            response = yield treq.get(url, pool=pool)
            body = json.loads((yield response.content()))
        self.assertEqual(target.count, checks)  # /health read the stored state
        self.assertEqual(response.code, 200)
        self.assertEqual(body["status"], "degraded")
        by_name = {entry["name"]: entry for entry in body["publish"]}
        self.assertEqual(sorted(by_name), ["publish.gone", "publish.up"])
        self.assertEqual((by_name["publish.up"]["ok"], by_name["publish.up"]["detail"]), (True, "reachable"))
        self.assertEqual((by_name["publish.gone"]["ok"], by_name["publish.gone"]["detail"]), (False, "refused"))
        self.assertEqual(by_name["publish.gone"]["target"], f"127.0.0.1:{dead}")
