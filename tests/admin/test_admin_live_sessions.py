"""The manhole helpers against real IMAP and submission sessions: list per listener, kick, show the relay queue."""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import socket
import ssl

import treq
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from mailgw.admin.shell import Shell
from tests.admin.helpers_ops import EventWaiter, port_of, start_gateway, tempdir, until, write_config
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
smarthost = {{ host = "127.0.0.1", port = {dead_port}, starttls = "off" }}
[admin]
http = {{ listen = "tcp:0:interface=127.0.0.1" }}
"""


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: relay attempts are refused and the message stays queued
    return port


class LiveSessionTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        from mailgw.auth.md4 import nt_hash
        from mailgw.auth.usersfile import LocalUser, hash_password, write_users_file

        directory = tempdir(self)
        self.cert = make_server_cert(directory, ["localhost"])
        users = os.path.join(directory, "users")
        os.close(os.open(users, os.O_WRONLY | os.O_CREAT, 0o600))
        write_users_file(users, {"alice": LocalUser("alice", hash_password("Al1ce-pw"), ("alice@localhost",), nt_hash("Al1ce-pw"))})
        path, _ = write_config(self, CONFIG.format(cert=self.cert.cert_file, key=self.cert.key_file, users=users,
                                                   dead_port=closed_port()))
        self.gateway = start_gateway(self, path)
        self.context = ssl.create_default_context(cafile=self.cert.ca_file)
        self.printed: list[str] = []
        self.shell = Shell(self.gateway, lambda: None, out=self.printed.append)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    def imap_login(self) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL("localhost", port_of(self.gateway, "imap.t.bind_tls[0]"), ssl_context=self.context, timeout=15)
        client.login("alice", "Al1ce-pw")
        return client

    @defer.inlineCallbacks
    def test_list_and_kick_imap_session(self):
        """sessions() lists a logged-in IMAPS client under its listener with its user; kick(0) disconnects it."""
        client = yield deferToThread(self.imap_login)
        self.shell.sessions("imap.t")
        session = self.gateway.sessions.sessions("imap.t")[0]
        self.assertIn("imap.t", self.printed[-1])
        self.assertIn("alice", self.printed[-1])
        self.assertIn("1 session(s)", self.printed[-1])
        self.shell.kick(0)
        self.assertIn("kicked", self.printed[-1])
        with self.assertRaises((imaplib.IMAP4.abort, OSError, EOFError)):
            yield deferToThread(client.noop)
        client.shutdown()  # closes the file imaplib reads from too, so the socket really closes
        yield until(lambda: session not in self.gateway.sessions.sessions())

    @defer.inlineCallbacks
    def test_submission_session_listed(self):
        """sessions() lists a submission client under submission.relay (the label of its logs and metrics) as host:port."""
        client = yield deferToThread(lambda: smtplib.SMTP_SSL("localhost", port_of(self.gateway, "submission.relay.bind_tls[0]"),
                                                              context=self.context, timeout=15))
        self.addCleanup(client.close)
        yield deferToThread(client.login, "alice", "Al1ce-pw")
        self.shell.sessions()
        port = client.sock.getsockname()[1]
        self.assertRegex(self.printed[-1], rf"0 +submission\.relay +smtp +127\.0\.0\.1:{port} +alice")

    @defer.inlineCallbacks
    def test_relay_queue(self):
        """A message for a remote domain waits in the queue: queue() shows it, /metrics and /health count it, flush() runs."""
        def submit() -> None:
            with smtplib.SMTP_SSL("localhost", port_of(self.gateway, "submission.relay.bind_tls[0]"),
                                  context=self.context, timeout=15) as smtp:
                smtp.login("alice", "Al1ce-pw")
                smtp.sendmail("alice@localhost", ["bob@remote.example"], b"Subject: hi\r\n\r\nqueued\r\n")
        events = EventWaiter(self)
        deferred = events.next("relay.deferred")
        yield deferToThread(submit)
        yield deferred  # the first attempt failed (nothing listens at the smarthost): the message waits
        self.shell.queue()
        self.assertIn("alice@localhost", self.printed[-1])
        self.assertIn("bob@remote.example", self.printed[-1])
        self.assertIn("1 message(s)", self.printed[-1])
        self.assertRegex(self.printed[-1], r"next attempt.*\n.* \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")  # ISO 8601 retry time
        base = f"http://127.0.0.1:{port_of(self.gateway, 'admin.http.listen')}"
        text = yield (yield treq.get(base + "/metrics", pool=self.pool)).text()
        self.assertIn("mailgw_relay_queue_messages 1.0", text)
        health = json.loads((yield (yield treq.get(base + "/health", pool=self.pool)).content()))
        queue = {b["name"]: b for b in health["backends"]}["relay_queue:relay"]
        self.assertEqual((queue["ok"], queue["detail"]["messages"]), (True, 1))
        again = events.next("relay.deferred")
        self.shell.flush()
        self.assertIn("flush started", self.printed[-1])
        yield again
        self.assertEqual(self.gateway.queue.entries()[0]["attempts"], 2)
