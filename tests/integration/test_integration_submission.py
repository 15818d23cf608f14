"""The real `twistd -n mailgw` process with a [submission.NAME]: TLS and AUTH gates on 587/465 over loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import smtplib
import ssl

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.smtp.smtp_support import SinkBehaviour, SinkFactory
from tests.support.certs import make_server_cert
from tests.support.gateway import Gateway, environment

PW = "Subm1ssion-pw"

CONFIG = """
config_version = 1

[server]
hostname = "localhost"
state_dir = "{state}"

[tls.t]
cert_file = "{cert}"
key_file = "{key}"

[auth]
backends = ["local"]
failure_delay = "0s"

[auth.local]
users_file = "{users}"

[submission.t]
bind = ["tcp:0:interface=127.0.0.1"]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
auth = ["plain", "login"]
local_domains = ["example.test"]
smarthost = {{ host = "127.0.0.1", port = {sink}, starttls = "off" }}
"""


class RealProcessSubmissionTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        base = tempfile.mkdtemp(prefix="mailgw-submission-")
        self.addCleanup(shutil.rmtree, base, True)
        files = make_server_cert(base, ["localhost", "127.0.0.1"])
        users = os.path.join(base, "users")
        fd = os.open(users, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        self.state = os.path.join(base, "state")
        self.sink = SinkFactory(SinkBehaviour(starttls=False))
        sink_port = reactor.listenTCP(0, self.sink, interface="127.0.0.1")
        self.addCleanup(sink_port.stopListening)
        config = os.path.join(base, "mailgw.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(state=self.state, cert=files.cert_file, key=files.key_file, users=users,
                                  sink=sink_port.getHost().port))
        for user in ("alice", "bob"):
            r = subprocess.run([sys.executable, "-m", "mailgw.cli", "--config", config, "user", "add", user,
                                "--address", f"{user}@example.test", "--password-stdin"],
                               input=PW + "\n", capture_output=True, text=True, env=environment(), timeout=60)
            assert r.returncode == 0, r.stderr
        self.ca_file = files.ca_file
        self.gw = Gateway(config, base)
        self.addCleanup(self.gw.stop)

    def start(self) -> None:
        import time

        self.gw.start(expect=0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = "".join(self.gw.output)
            if "no store or credential checker assembled" in out:
                self.fail("assemble.py did not wire the store and credential checker:\n" + out)
            if "submission.t.bind_tls[0]" in self.gw.ports and "submission.t.bind[0]" in self.gw.ports:
                return
            if self.gw.process is not None and self.gw.process.poll() is not None:
                break
            time.sleep(0.05)
        self.fail("gateway did not start:\n" + "".join(self.gw.output))

    async def test_gates_on_the_real_process(self) -> None:
        """The real process offers STARTTLS then AUTH, refuses AUTH in clear and MAIL without AUTH."""
        await deferToThread(self.start)
        await deferToThread(self.gates)

    def gates(self) -> None:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        with smtplib.SMTP("127.0.0.1", self.gw.port("submission.t.bind[0]"), timeout=10) as s:
            s.ehlo("c.example")
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"))
            self.assertEqual(s.docmd("AUTH", "PLAIN AGFsaWNlAHB3")[0], 530)
            s.starttls(context=ctx)
            s.ehlo("c.example")
            self.assertIn("PLAIN", s.esmtp_features.get("auth", "").upper())
            code, text = s.docmd("MAIL", "FROM:<alice@example.test>")
            self.assertEqual((code, text), (530, b"5.7.0 Authentication required"))
        with smtplib.SMTP_SSL("127.0.0.1", self.gw.port("submission.t.bind_tls[0]"), timeout=10, context=ctx) as s:
            s.ehlo("c.example")
            self.assertFalse(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("auth"))

    async def test_submit_deliver_relay(self) -> None:
        """STARTTLS + AUTH on the real process: a local recipient lands in its Maildir, a remote one at the smarthost."""
        await deferToThread(self.start)
        ctx = ssl.create_default_context(cafile=self.ca_file)
        msg = b"From: alice@example.test\r\nSubject: real\r\n\r\n.leading dot\r\nbody\r\n"

        def submit() -> None:
            with smtplib.SMTP("127.0.0.1", self.gw.port("submission.t.bind[0]"), timeout=30) as s:
                s.starttls(context=ctx)
                s.login("alice", PW)
                s.sendmail("alice@example.test", ["bob@example.test", "far@remote.example"], msg)
        await deferToThread(submit)
        for _ in range(1000):
            if self.sink.messages:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(len(self.sink.messages), 1)
        self.assertTrue(self.sink.messages[0].body.endswith(msg))
        self.assertEqual(self.sink.messages[0].recipients, ["far@remote.example"])
        delivered = []
        for directory, _, files in os.walk(os.path.join(self.state, "mail")):
            if os.path.basename(directory) in ("new", "cur"):
                delivered += [os.path.join(directory, f) for f in files]
        self.assertEqual(len(delivered), 1)
        with open(delivered[0], "rb") as f:
            self.assertTrue(f.read().endswith(msg))
