"""The assembled gateway is the IGatewayView (and IReloadTarget) admin reads: listeners, queues, directories, rules, reload."""

from __future__ import annotations

import json
import os
import subprocess

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailgw.interfaces import IDirectory, IGatewayView, IPublishRule, IRelayQueue, IReloadTarget, ListenerState
from tests.admin.helpers_ops import port_of, start_gateway, tempdir, write_config
from tests.support.certs import make_server_cert

CONFIG = """[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth]
backends = ["local"]
failure_delay = "0s"
[auth.local]
users_file = "{users}"
[imap.t]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
[submission.relay]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
local_domains = ["localhost"]
[publish.web]
listen = "tcp:0:interface=127.0.0.1"
target = "127.0.0.1:9"
clients = ["any"]
[admin]
http = {{ listen = "tcp:0:interface=127.0.0.1" }}
"""

LABELS = ["submission.relay.bind_tls[0]", "imap.t.bind_tls[0]", "publish.web.listen", "admin.http.listen"]


class GatewayViewTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        directory = tempdir(self)
        cert = make_server_cert(directory, ["localhost"])
        users = os.path.join(directory, "users")
        os.close(os.open(users, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path, _ = write_config(self, CONFIG.format(cert=cert.cert_file, key=cert.key_file, users=users))
        self.gateway = start_gateway(self, self.path)
        assert self.gateway.root is not None
        return self.gateway.root.ready()

    def test_provides_the_interfaces(self) -> None:
        """verifyObject: the Gateway provides IGatewayView and IReloadTarget, and what they return provides theirs."""
        self.assertTrue(verifyObject(IGatewayView, self.gateway))
        self.assertTrue(verifyObject(IReloadTarget, self.gateway))
        queues = self.gateway.relay_queues()
        self.assertEqual(list(queues), ["relay"])
        self.assertTrue(verifyObject(IRelayQueue, queues["relay"]))
        self.assertEqual([d.name for d in self.gateway.directories()], ["local"])
        self.assertTrue(all(verifyObject(IDirectory, d) for d in self.gateway.directories()))
        self.assertEqual(list(self.gateway.publish_rules()), ["web"])
        self.assertTrue(verifyObject(IPublishRule, self.gateway.publish_rules()["web"]))
        self.assertEqual(self.gateway.throttled(), [])

    def test_listeners_are_the_bound_ports(self) -> None:
        """listeners() names every configured listener with the address it is bound to."""
        states = self.gateway.listeners()
        self.assertTrue(all(isinstance(s, ListenerState) for s in states))
        self.assertEqual([s.label for s in states], LABELS)
        for state in states:
            self.assertTrue(state.bound, state)
            self.assertEqual(state.address, f"127.0.0.1:{port_of(self.gateway, state.label)}")
            self.assertEqual(state.endpoint, "tcp:0:interface=127.0.0.1")

    @defer.inlineCallbacks
    def test_health_over_http_reads_the_view(self):
        """curl's /health lists the view's listeners and the publishing target, reached through the interface only."""
        url = f"http://127.0.0.1:{port_of(self.gateway, 'admin.http.listen')}/health"
        done = yield deferToThread(subprocess.run, ["curl", "-s", "--max-time", "10", url], capture_output=True, text=True)
        body = json.loads(done.stdout)
        self.assertEqual([entry["name"] for entry in body["listeners"]], LABELS)
        self.assertEqual([entry["address"] for entry in body["listeners"]],
                         [state.address for state in self.gateway.listeners()])
        self.assertEqual([t["name"] for t in body["publish"]], ["publish.web"])
        self.assertEqual([b["name"] for b in body["backends"]], ["directory:local", "relay_queue:relay"])

    @defer.inlineCallbacks
    def test_reload_through_the_view(self):
        """IGatewayView.reload() re-reads the file: unchanged it is ok, a restart-only change is refused."""
        self.assertEqual((yield self.gateway.reload()), "ok")
        with open(self.path) as handle:
            text = handle.read()
        with open(self.path, "w") as handle:
            handle.write(text.replace('local_domains = ["localhost"]', 'local_domains = ["example.org"]'))
        self.assertEqual((yield self.gateway.reload()), "refused")
