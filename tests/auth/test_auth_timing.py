"""Unknown user and wrong password are indistinguishable in time on the real reactor, with real argon2id."""

from __future__ import annotations

import statistics
import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mailgw.auth.local import LocalDirectory
from mailgw.auth.ratelimit import AuthLimits, Rate
from mailgw.auth.service import AuthService
from mailgw.auth.threads import BlockingRunner
from mailgw.auth.usersfile import LocalUser, hash_password, verify_hash, write_users_file
from mailgw.errors import AuthFailed
from mailgw.interfaces import ClientInfo


class TimingTests(TestCase):
    @inlineCallbacks
    def test_unknown_vs_wrong(self):  # type: ignore[no-untyped-def]
        """Median reply times of unknown-user and wrong-password failures differ by < 5% of the delay; both ≥ the delay."""
        path = self.mktemp()
        write_users_file(path, {"alice": LocalUser("alice", hash_password("S3cret!"))})  # full-cost argon2id
        runner = BlockingRunner(reactor, "timing", maxthreads=2)
        self.addCleanup(runner.close)
        started = time.monotonic()
        verify_hash(hash_password("calibrate"), "x")
        cost = time.monotonic() - started  # hash + verify: more than one verification, on this box now
        delay = max(1.0, 3 * cost)  # the delay must dominate, as 2 s does in production
        service = AuthService([LocalDirectory(path, runner)], reactor, failure_delay=delay,
                              limits=AuthLimits(per_ip=Rate(1000, 60), per_user_ip=Rate(1000, 60), slow_after=1000))
        client = ClientInfo("imap", "secure", "192.0.2.50", tls=True)
        samples: dict[str, list[float]] = {"alice": [], "nobody": []}
        for _ in range(3):
            for user in samples:
                start = time.monotonic()
                yield self.assertFailure(service.login(user, "wrong", client), AuthFailed)
                samples[user].append(time.monotonic() - start)
        medians = {u: statistics.median(s) for u, s in samples.items()}
        self.assertGreaterEqual(min(min(s) for s in samples.values()), delay - 0.01)
        self.assertLess(abs(medians["alice"] - medians["nobody"]), 0.05 * delay, medians)
