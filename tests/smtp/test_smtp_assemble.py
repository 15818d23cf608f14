"""assemble.build_submission: a [submission.NAME] table becomes two TLS listeners, a queue and a relay service."""

from __future__ import annotations

import os
import smtplib
import ssl

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from mailgw import assemble
from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService
from mailgw.config import load_config_text
from mailgw.net.sessions import SessionRegistry
from mailgw.store.memory import MemoryStore
from tests.smtp.smtp_support import SinkFactory, SinkBehaviour, make_certs, tmpdir

CONFIG = """
config_version = 1
[server]
hostname = "mx.example.test"
state_dir = "{state}"
[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth]
backends = ["local"]
[auth.local]
users_file = "{users}"
[submission.t]
bind = ["tcp:0:interface=127.0.0.1"]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
local_domains = ["example.test"]
max_message_size = "1M"
smarthost = {{ host = "127.0.0.1", port = {sink}, starttls = "off" }}
"""


class AssembleTests(TestCase):
    timeout = 60

    async def test_build_submission(self) -> None:
        """The assembled listeners accept STARTTLS and implicit TLS, deliver locally and relay via the smarthost."""
        base = tmpdir(self)
        certs = make_certs(base, ("mx.example.test", "localhost"))
        users = os.path.join(base, "users")
        open(users, "w").close()
        os.chmod(users, 0o600)
        sink = SinkFactory(SinkBehaviour(starttls=False))
        sink_port = reactor.listenTCP(0, sink, interface="127.0.0.1")
        self.addCleanup(sink_port.stopListening)
        config = load_config_text(CONFIG.format(state=os.path.join(base, "state"), cert=certs["cert"],
                                                key=certs["key"], users=users, sink=sink_port.getHost().port))
        gw = assemble.Gateway(config=config, reactor=reactor, tls=assemble.build_tls(config),
                              sessions=SessionRegistry(), disk_pool=ThreadPool(1, 4, "test-disk"))
        directory = MemoryDirectory()
        directory.add_user("alice", "pw", ["alice@example.test"])
        directory.add_user("bob", "pw", ["bob@example.test"])
        gw.auth = AuthService([directory], reactor, failure_delay=0)
        gw.store = MemoryStore()
        root = assemble.MailgwService(gw)
        gw.root = root
        assemble.ThreadPoolService(gw.disk_pool).setServiceParent(root)
        assemble.build_submission(gw, "t", config.submission["t"])
        root.privilegedStartService()
        root.startService()
        self.addCleanup(root.stopService)
        await root.ready()
        ports = {svc.label: svc.port.getHost().port for svc in root.listeners}
        ctx = ssl.create_default_context(cafile=certs["ca"])
        msg = b"From: alice@example.test\r\nSubject: a\r\n\r\nbody\r\n"

        def submit() -> None:
            with smtplib.SMTP("127.0.0.1", ports["submission.t.bind[0]"], timeout=10) as s:
                s.starttls(context=ctx)
                s.login("alice", "pw")
                s.sendmail("alice@example.test", ["bob@example.test", "far@remote.example"], msg)
            with smtplib.SMTP_SSL("127.0.0.1", ports["submission.t.bind_tls[0]"], timeout=10, context=ctx) as s:
                assert s.ehlo()[1].find(b"SIZE 1048576") >= 0
        await deferToThread(submit)
        for _ in range(500):
            if sink.messages:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(sink.messages), 1)
        self.assertTrue(sink.messages[0].body.endswith(msg))
        self.assertEqual(len(gw.store.account("bob").folder("INBOX").stored), 1)
        self.assertIs(gw.queue, gw.extras["queue.t"])
        runner = next(svc.runner for svc in root if hasattr(svc, "runner"))
        while gw.queue.index or runner.in_flight:  # let the relay session finish before the services stop
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.05, lambda: None)
