"""A real slapd behind the gateway: /health reports the directory down when it stops; a reload moves to another server live."""

from __future__ import annotations

import json
import os

import treq
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from mailgw import assemble
from mailgw.interfaces import ClientInfo
from tests.admin.helpers_ops import close_runners, port_of, start_gateway, tempdir, until, write_config

from tests.support.ldap_fixture import SlapdFixture, available

LDAP = """[admin]
http = {{ listen = "tcp:0:interface=127.0.0.1" }}
[auth]
backends = ["ldap.corp"]
failure_delay = "0s"
[auth.ldap.corp]
urls = ["{url}"]
bind_dn = "{bind_dn}"
bind_password_file = "{secret}"
user_base = "{user_base}"
timeout = "2s"
"""
CLIENT = ClientInfo(protocol="imap", listener="imap.t", peer_host="127.0.0.9", tls=True)


class DirectoryOpsTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if not available():
            self.skipTest("slapd is not installed (apt-get install slapd)")
        self.first = SlapdFixture().start()
        self.addCleanup(self.first.stop)
        self.second = SlapdFixture().start()
        self.addCleanup(self.second.stop)
        self.secret = os.path.join(tempdir(self), "ldap.secret")
        with open(os.open(self.secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(self.first.bind_password)
        self.path, self.state = write_config(self, self.config(self.first.url))
        self.gateway = start_gateway(self, self.path)
        self.base = f"http://127.0.0.1:{port_of(self.gateway, 'admin.http.listen')}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    def config(self, url: str) -> str:
        return LDAP.format(url=url, bind_dn=self.first.bind_dn, secret=self.secret, user_base=self.first.user_base)

    @defer.inlineCallbacks
    def health(self):
        response = yield treq.get(self.base + "/health", pool=self.pool)
        body = json.loads((yield response.content()))
        return response.code, {b["name"]: b for b in body["backends"]}

    @defer.inlineCallbacks
    def test_outage_and_live_failover(self):
        """Directory up: 200; slapd stopped: 503 naming it; config moved to another server by reload: 200 and logins work."""
        code, backends = yield self.health()
        self.assertEqual((code, backends["directory:ldap.corp"]["ok"]), (200, True))
        yield deferToThread(self.first.stop_server)
        code, backends = yield self.health()
        self.assertEqual(code, 503)
        self.assertFalse(backends["directory:ldap.corp"]["ok"])
        with open(self.path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{self.state}"\n' + self.config(self.second.url))
        old = type("Old", (), {"backends": list(self.gateway.auth.backends)})()
        self.addCleanup(close_runners, old)
        self.assertEqual((yield assemble.reload_from_source(self.gateway)), "ok")
        code, backends = yield self.health()
        self.assertEqual((code, backends["directory:ldap.corp"]["detail"]), (200, "reachable"))
        identity = yield self.gateway.auth.login("alice", self.second.users["alice"].password, CLIENT)
        self.assertEqual(identity.user, "alice")
        replaced = old.backends[0]._runner
        self.assertTrue(replaced.retired)  # the replaced directory's LDAP pool is stopped, off the reactor
        yield until(lambda: not replaced.pool.started and not any(t.is_alive() for t in replaced.pool.threads))
