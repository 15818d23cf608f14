"""Failure budgets with a fake clock: slow, then refuse a brute-forcer without locking out the real user."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.ratelimit import AuthLimits, FailureLimiter, Rate, client_net
from mailgw.auth.service import AuthService
from mailgw.errors import AuthFailed, AuthThrottled
from mailgw.interfaces import ClientInfo


def client(ip: str) -> ClientInfo:
    return ClientInfo("smtp", "relay", ip, 1234, tls=True)


class CountingDirectory(MemoryDirectory):
    """Counts password checks, to prove throttled attempts never reach a backend."""

    calls = 0

    def check_password(self, login, password):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().check_password(login, password)


class RateTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """Rates come from the config form with units (mailgw.config.units, the one rate parser)."""
        from mailgw.config.units import parse_rate

        self.assertEqual(Rate(*parse_rate("20/5m")), Rate(20, 300.0))
        self.assertEqual(Rate(*parse_rate("5/30s")), Rate(5, 30.0))
        self.assertEqual(Rate(*parse_rate("3/1h")), Rate(3, 3600.0))
        self.assertRaises(ValueError, parse_rate, "20 per minute")

    def test_ipv6_prefix(self) -> None:
        """IPv6 clients are throttled per /64; mapped IPv4 as IPv4."""
        self.assertEqual(client_net("2001:db8::1"), client_net("2001:db8::ffff"))
        self.assertEqual(client_net("::ffff:192.0.2.1"), "192.0.2.1")


class ThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = CountingDirectory()
        self.directory.add_user("alice", "S3cret!")
        limits = AuthLimits(per_ip=Rate(8, 300), per_user_ip=Rate(3, 300), slow_after=2, max_delay_factor=4)
        self.service = AuthService([self.directory], self.clock, failure_delay=1.0, limits=limits)

    def attempt(self, login: str, password: str, ip: str = "198.51.100.7") -> object:
        d = self.service.login(login, password, client(ip))
        self.clock.advance(10)  # past any delay (cap 4 s), well within the window
        return d

    def test_throttled_listing_and_adopt(self) -> None:
        """throttled() lists the pair over budget; adopt() takes new limits and keeps the failure windows."""
        for _ in range(3):
            self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        listed = self.service.throttled()
        self.assertEqual([(e["ip"], e["user"], e["failures"]) for e in listed], [("198.51.100.7", "alice", 3)])
        looser = AuthService([self.directory], self.clock, failure_delay=0.5,
                             limits=AuthLimits(per_ip=Rate(8, 300), per_user_ip=Rate(10, 300)))
        self.service.adopt(looser, directories=False)
        self.assertEqual(self.service.failure_delay, 0.5)
        self.assertEqual(self.service.throttled(), [])
        self.successResultOf(self.attempt("alice", "S3cret!"))
        strict = AuthService([self.directory], self.clock, limits=AuthLimits(per_user_ip=Rate(1, 300)))
        self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        self.service.adopt(strict, directories=False)
        self.assertEqual(len(self.service.throttled()), 1)  # the window survived the reload

    def test_user_ip_budget(self) -> None:
        """After 3 failures for (IP, alice), even the right password is refused from that IP, unseen by the backend."""
        for _ in range(3):
            self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        calls = self.directory.calls
        f = self.failureResultOf(self.attempt("alice", "S3cret!"), AuthThrottled)
        self.assertEqual(f.value.public, AuthFailed().public)  # same reply as a wrong password
        self.assertEqual(self.directory.calls, calls)

    def test_spelling_shares_budget(self) -> None:
        """alice, ALICE, 'alice ' and DOM\\alice spend one (IP, account) budget."""
        for name in ("alice", "ALICE", "DOM\\alice"):
            self.failureResultOf(self.attempt(name, "wrong"), AuthFailed)
        self.failureResultOf(self.attempt("alice ", "S3cret!"), AuthThrottled)

    def test_other_ip_not_locked_out(self) -> None:
        """The real user logs in from another address while the attacker's is throttled."""
        for _ in range(5):
            self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        self.failureResultOf(self.attempt("alice", "S3cret!"), AuthThrottled)
        self.assertEqual(self.successResultOf(self.attempt("alice", "S3cret!", "203.0.113.9")).user, "alice")

    def test_ip_budget_across_users(self) -> None:
        """Spraying many user names from one IP spends the per-IP budget."""
        for i in range(8):
            self.failureResultOf(self.attempt(f"user{i}", "pw"), AuthFailed)
        self.failureResultOf(self.attempt("alice", "S3cret!"), AuthThrottled)

    def test_window_expires(self) -> None:
        """The budget refills once the window has passed."""
        for _ in range(3):
            self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        self.failureResultOf(self.attempt("alice", "S3cret!"), AuthThrottled)
        self.clock.advance(301)
        self.successResultOf(self.attempt("alice", "S3cret!"))

    def test_success_clears_user_failures(self) -> None:
        """A success clears that (IP, account) pair's failures."""
        self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        self.successResultOf(self.attempt("alice", "S3cret!"))
        self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        self.failureResultOf(self.attempt("alice", "wrong"), AuthFailed)
        self.successResultOf(self.attempt("alice", "S3cret!"))

    def test_delay_grows(self) -> None:
        """Beyond slow_after failures from an IP, the delay doubles up to the cap."""
        waits = []
        for i in range(6):
            d = self.service.login(f"u{i}", "pw", client("192.0.2.99"))
            t = 0.0
            while not d.called:
                self.clock.advance(0.25)
                t += 0.25
            self.failureResultOf(d, AuthFailed)
            waits.append(t)
        self.assertEqual(waits, [1.0, 1.0, 2.0, 4.0, 4.0, 4.0])

    def test_inflight_counted(self) -> None:
        """Parallel attempts in flight spend the budget before they finish."""
        limiter = FailureLimiter(AuthLimits(per_ip=Rate(2, 60), per_user_ip=Rate(2, 60)), self.clock)
        limiter.begin("192.0.2.1", "alice")
        limiter.begin("192.0.2.1", "alice")
        self.assertFalse(limiter.allowed("192.0.2.1", "alice"))
        self.assertTrue(limiter.allowed("192.0.2.2", "alice"))
