"""The credential checker under reload: new throttling limits apply live, failure windows survive, the manhole lists throttled peers."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from mailgw import assemble
from mailgw.admin import probes
from mailgw.admin.shell import Shell
from mailgw.config import load_config
from mailgw.errors import AuthFailed, AuthThrottled, AuthUnavailable
from mailgw.interfaces import ClientInfo
from tests.admin.helpers_ops import close_runners, start_gateway, tempdir, until, write_config

AUTH = """[auth]
backends = ["local"]
failure_delay = "0s"
limits = {{ per_ip = "{limit}", per_user_ip = "{limit}" }}
[auth.local]
users_file = "{users}"
"""

CLIENT = ClientInfo(protocol="imap", listener="imap.t", peer_host="127.0.0.9", peer_port=40000, tls=True)


class AuthReloadTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.users = os.path.join(tempdir(self), "users")
        os.close(os.open(self.users, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path, self.state = write_config(self, AUTH.format(limit="2/5m", users=self.users))
        self.gateway = start_gateway(self, self.path)

    def set_limit(self, limit: str) -> None:
        with open(self.path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{self.state}"\n' + AUTH.format(limit=limit, users=self.users))

    @defer.inlineCallbacks
    def fail_logins(self, count: int):
        for _ in range(count):
            yield self.assertFailure(self.gateway.auth.login("nobody", "wrong", CLIENT), AuthFailed)

    @defer.inlineCallbacks
    def test_limits_reload_live(self):
        """Raising the per-IP budget by reload lets the client try again; lowering it again throttles at once."""
        yield self.fail_logins(2)
        yield self.assertFailure(self.gateway.auth.login("nobody", "wrong", CLIENT), AuthThrottled)
        peers = probes.throttled_peers(self.gateway)
        self.assertEqual(sorted((p["ip"], p["user"] or "") for p in peers), [("127.0.0.9", ""), ("127.0.0.9", "nobody")])
        self.assertTrue(all(p["failures"] >= 2 for p in peers))
        printed: list[str] = []
        Shell(self.gateway, lambda: None, throttled=lambda: probes.throttled_peers(self.gateway), out=printed.append).throttled()
        self.assertIn("127.0.0.9", printed[0])
        self.assertIn("2 throttled", printed[0])

        auth = self.gateway.auth
        self.set_limit("50/5m")
        self.assertEqual((yield assemble.reload_from_source(self.gateway)), "ok")
        self.assertIs(self.gateway.auth, auth)  # protocols keep the object they hold
        self.assertEqual(self.gateway.auth.limits.per_ip.count, 50)
        self.assertEqual(probes.throttled_peers(self.gateway), [])
        error = yield self.assertFailure(self.gateway.auth.login("nobody", "wrong", CLIENT), AuthFailed)
        self.assertNotIsInstance(error, AuthThrottled)

        self.set_limit("2/5m")
        self.assertEqual((yield assemble.reload_from_source(self.gateway)), "ok")
        yield self.assertFailure(self.gateway.auth.login("nobody", "wrong", CLIENT), AuthThrottled)

    @defer.inlineCallbacks
    def test_directory_rebuilt(self):
        """A changed users_file path swaps the local directory: a user only in the new file can log in."""
        from mailgw.auth.md4 import nt_hash
        from mailgw.auth.usersfile import LocalUser, hash_password, write_users_file

        other = os.path.join(tempdir(self), "users2")
        os.close(os.open(other, os.O_WRONLY | os.O_CREAT, 0o600))
        write_users_file(other, {"carol": LocalUser("carol", hash_password("Pa55word!"), ("carol@localhost",), nt_hash("Pa55word!"))})
        yield self.assertFailure(self.gateway.auth.login("carol", "Pa55word!", CLIENT), AuthFailed)
        old = list(self.gateway.auth.backends)
        self.addCleanup(close_runners, type("Old", (), {"backends": old})())
        self.users = other
        self.set_limit("2/5m")
        self.assertEqual(load_config(self.path).auth.local.users_file, other)
        self.assertEqual((yield assemble.reload_from_source(self.gateway)), "ok")
        identity = yield self.gateway.auth.login("carol", "Pa55word!", CLIENT)
        self.assertEqual(identity.user, "carol")
        replaced = old[0]._runner  # it ran carol's first check, so its threads were started
        self.assertTrue(replaced.retired)
        yield until(lambda: not replaced.pool.started and not any(t.is_alive() for t in replaced.pool.threads))
        yield self.assertFailure(old[0].check_password("carol", "Pa55word!"), AuthUnavailable)

    @defer.inlineCallbacks
    def test_rebuild_does_not_block_the_reactor(self):
        """A reload that rebuilds the directory (an argon2id dummy hash) runs off the reactor: timers keep firing meanwhile."""
        other = os.path.join(tempdir(self), "users2")
        os.close(os.open(other, os.O_WRONLY | os.O_CREAT, 0o600))
        self.users = other
        self.set_limit("2/5m")
        ticks: list[float] = []
        timer = task.LoopingCall(lambda: ticks.append(reactor.seconds()))
        timer.start(0.005)
        self.addCleanup(lambda: timer.running and timer.stop())
        started = reactor.seconds()
        d = assemble.reload_from_source(self.gateway)
        self.assertNoResult(d)  # the checker is being built in a worker thread, not here
        self.assertEqual((yield d), "ok")
        took = reactor.seconds() - started
        timer.stop()
        during = [t for t in ticks if t > started]
        gaps = [b - a for a, b in zip([started] + during, during)]
        self.assertGreaterEqual(len(during), 3, f"reload took {took:.3f}s")
        self.assertLess(max(gaps), max(0.15, took / 2), f"reload took {took:.3f}s, longest reactor gap {max(gaps):.3f}s")
        self.assertEqual(self.gateway.auth.backends[0].path, other)

    @defer.inlineCallbacks
    def test_later_prepare_failure_keeps_old_checker(self):
        """If a hook after the auth hook refuses, the running checker keeps its old limits, backends and failure windows."""
        from mailgw.errors import ConfigError


        def refuse(config):
            raise ConfigError("auth.limits: refused by a later hook")

        self.gateway.reload_hooks.append((("auth",), refuse))
        auth, backends = self.gateway.auth, list(self.gateway.auth.backends)
        other = os.path.join(tempdir(self), "users2")
        os.close(os.open(other, os.O_WRONLY | os.O_CREAT, 0o600))
        self.users = other
        self.set_limit("50/5m")
        self.assertEqual((yield assemble.reload_from_source(self.gateway)), "failed")
        self.assertIs(self.gateway.auth, auth)
        self.assertEqual(self.gateway.auth.backends, backends)
        self.assertEqual(self.gateway.auth.limits.per_ip.count, 2)
        self.assertNotEqual(self.gateway.config.auth.local.users_file, other)
        yield self.fail_logins(2)
        yield self.assertFailure(self.gateway.auth.login("nobody", "wrong", CLIENT), AuthThrottled)


class PolicyReloadTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        from tests.support.certs import make_server_cert

        base = tempdir(self)
        self.users = os.path.join(base, "users")
        os.close(os.open(self.users, os.O_WRONLY | os.O_CREAT, 0o600))
        self.cert = make_server_cert(base, ["localhost"])
        self.path, self.state = write_config(self, self.body(["basic"]))
        self.gateway = start_gateway(self, self.path)

    def body(self, mechanisms: list[str]) -> str:
        listed = ", ".join(f'"{m}"' for m in mechanisms)
        return (AUTH.format(limit="20/5m", users=self.users)
                + f'[tls.t]\ncert_file = "{self.cert.cert_file}"\nkey_file = "{self.cert.key_file}"\n'
                + f'[imap.t]\nbind = ["tcp:0:interface=127.0.0.1"]\ntls = "t"\nauth = [{listed}]\n')

    @defer.inlineCallbacks
    def test_server_mechanisms_reload_live(self):
        """imap.NAME.auth is applied by reload (the sessions ask the checker), with no restart."""
        client = ClientInfo(protocol="imap", listener="imap.t", peer_host="127.0.0.9", tls=True)
        self.assertEqual(self.gateway.auth.mechanisms(client), ("PLAIN", "LOGIN"))
        with open(self.path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{self.state}"\n' + self.body(["plain"]))
        self.assertEqual((yield assemble.reload_from_source(self.gateway)), "ok")
        self.assertEqual(self.gateway.auth.mechanisms(client), ("PLAIN",))
