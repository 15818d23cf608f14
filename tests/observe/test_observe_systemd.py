"""sd_notify: READY only once listeners are bound, WATCHDOG while running, RELOADING/READY around SIGHUP, STOPPING at exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from mailgw.observe.systemd import Notifier, SystemdNotifyService, watchdog_interval
from tests.admin.helpers_ops import tempdir, write_config
from tests.support.gateway import Gateway


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, case: SynchronousTestCase, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        case.addCleanup(self.sock.close)
        if abstract:
            name = f"mailgw-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(tempdir(case), "notify")
            self.sock.bind(self.address)

    def receive(self, timeout: float = 30.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)


class NotifierTests(SynchronousTestCase):
    def test_datagram(self) -> None:
        """Assignments go out as one newline-separated datagram to a path socket."""
        sink = NotifySocket(self)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": sink.address})
        self.assertTrue(notifier.ready("serving"))
        self.assertEqual(sink.receive(), "READY=1\nSTATUS=serving")
        notifier.close()

    def test_abstract_namespace(self) -> None:
        """A NOTIFY_SOCKET starting with @ names the abstract namespace."""
        sink = NotifySocket(self, abstract=True)
        notifier = Notifier(sink.address)
        notifier.stopping()
        self.assertEqual(sink.receive(), "STOPPING=1")
        notifier.close()

    def test_not_under_systemd(self) -> None:
        """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
        notifier = Notifier.from_environ({})
        self.assertFalse(notifier.enabled)
        self.assertFalse(notifier.ready())

    def test_watchdog_interval(self) -> None:
        """Pings come at half of WATCHDOG_USEC, only when WATCHDOG_PID (if set) is this process."""
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000"}), 15.0)
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42), 15.0)
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=43))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "0"}))
        self.assertIsNone(watchdog_interval({}))

    def test_service_order(self) -> None:
        """READY=1 waits for the readiness Deferred; WATCHDOG=1 repeats on the clock; STOPPING=1 at stop."""
        sink = NotifySocket(self)
        clock = task.Clock()
        bound: defer.Deferred = defer.Deferred()
        service = SystemdNotifyService(Notifier(sink.address), lambda: bound, clock, watchdog=5.0)
        service.startService()
        self.assertEqual(sink.pending(), ["WATCHDOG=1"])
        clock.advance(5.0)
        self.assertEqual(sink.pending(), ["WATCHDOG=1"])
        bound.callback([None])
        self.assertEqual(sink.pending(), ["READY=1\nSTATUS=serving"])
        service.stopService()
        clock.advance(10.0)
        self.assertEqual(sink.pending(), ["STOPPING=1"])

    def test_bind_failure_never_ready(self) -> None:
        """If a listener fails to bind, READY=1 is never sent."""
        sink = NotifySocket(self)
        bound: defer.Deferred = defer.Deferred()
        service = SystemdNotifyService(Notifier(sink.address), lambda: bound, task.Clock())
        service.startService()
        bound.errback(OSError("address in use"))
        self.assertEqual(sink.pending(), [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class TwistdNotifyTests(SynchronousTestCase):
    def test_twistd_sequence(self) -> None:
        """The real twistd sends READY after binding (and serves /health), RELOADING+READY around SIGHUP (and survives it), STOPPING at SIGTERM."""
        sink = NotifySocket(self)
        path, _ = write_config(self, '[admin]\nhttp = { listen = "tcp:0:interface=127.0.0.1" }\n')
        gateway = Gateway(path, tempdir(self), env={"NOTIFY_SOCKET": sink.address, "WATCHDOG_USEC": "400000"})
        gateway.start(expect=1)
        self.addCleanup(gateway.stop)
        seen: list[str] = []

        def next_non_watchdog() -> str:
            while True:
                message = sink.receive()
                seen.append(message)
                if message != "WATCHDOG=1":
                    return message

        self.assertEqual(next_non_watchdog(), "READY=1\nSTATUS=serving")
        port = gateway.port("admin.http.listen")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            self.assertEqual(response.status, 200)
            self.assertEqual(json.loads(response.read())["listeners"][0]["name"], "admin.http.listen")
        gateway.process.send_signal(signal.SIGHUP)
        reloading = next_non_watchdog().split("\n")
        self.assertEqual(reloading[0], "RELOADING=1")
        self.assertTrue(reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1].split("=")[1]) > 0, reloading)
        self.assertEqual(next_non_watchdog(), "READY=1\nSTATUS=serving")
        gateway.wait_for("config reload: ok")
        self.assertIsNone(gateway.process.poll())
        deadline = time.monotonic() + 10
        while "WATCHDOG=1" not in seen and time.monotonic() < deadline:
            seen.append(sink.receive())
        self.assertIn("WATCHDOG=1", seen)
        # twistd re-raises the signal after a clean shutdown; systemd counts death by SIGTERM as success.
        self.assertIn(gateway.stop(), (0, -signal.SIGTERM))
        self.assertEqual(next_non_watchdog(), "STOPPING=1")
