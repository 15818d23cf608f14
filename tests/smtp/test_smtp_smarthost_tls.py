"""Smarthost credentials never travel without TLS: refused at load time, and never sent by the client (STRIPTLS)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.config import load_config_text
from mailgw.errors import ConfigError
from mailgw.smtp.client import SmarthostConfig, deliver
from mailgw.smtp.relay import RelayRunner
from tests.smtp.smtp_support import SinkBehaviour, SinkFactory, SubmissionHarness, tmpdir
from tests.support.certs import make_server_cert
from tests.support.gateway import environment, twistd_command

CONFIG = """config_version = 1
[server]
state_dir = "{state}"
[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth.local]
users_file = "{users}"
[submission.relay]
bind = ["tcp:0:interface=127.0.0.1"]
tls = "t"
smarthost = {{ host = "127.0.0.1", port = 2525, {tls}auth_user = "relayuser", auth_password_file = "{pw}" }}
"""
KEY = "submission.relay.smarthost.auth_user"


class LoaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.cert = make_server_cert(self.dir, ["localhost", "127.0.0.1"])
        self.users = os.path.join(self.dir, "users")
        self.pw = os.path.join(self.dir, "pw")
        for path in (self.users, self.pw):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    def config(self, tls: str) -> str:
        return CONFIG.format(state=os.path.join(self.dir, "state"), cert=self.cert.cert_file, key=self.cert.key_file,
                             users=self.users, pw=self.pw, tls=tls)

    def problems(self, tls: str) -> list[str]:
        try:
            load_config_text(self.config(tls))
        except ConfigError as exc:
            return exc.problems
        return []

    def test_credentials_need_tls(self) -> None:
        """auth_user with starttls opportunistic/off is one problem naming the key; required or implicit TLS loads."""
        for tls in ('starttls = "opportunistic", ', 'starttls = "off", '):
            found = [p for p in self.problems(tls) if p.startswith(KEY)]
            self.assertEqual(len(found), 1, self.problems(tls))
            self.assertIn('need starttls = "required" or implicit_tls = true', found[0])
        for tls in ("", 'starttls = "required", ', "implicit_tls = true, ", 'implicit_tls = true, starttls = "off", '):
            self.assertEqual([p for p in self.problems(tls) if p.startswith(KEY)], [], tls)

    def test_check_config_and_twistd_exit_78(self) -> None:
        """mailgwctl check-config and twistd both exit 78 with the one line naming the key."""
        path = os.path.join(self.dir, "mailgw.toml")
        with open(path, "w") as f:
            f.write(self.config('starttls = "opportunistic", '))
        for argv in ([sys.executable, "-m", "mailgw.cli", "check-config", "--config", path],
                     twistd_command("mailgw", "--config", path)):
            r = subprocess.run(argv, capture_output=True, text=True, env=environment(), cwd=self.dir, timeout=60)
            self.assertEqual(r.returncode, 78, r.stdout + r.stderr)
            lines = [ln for ln in r.stderr.splitlines() if KEY in ln]
            self.assertEqual(len(lines), 1, r.stderr)
            self.assertNotIn("listening on", r.stdout)


class StripTLSTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)
        # a smarthost (or a man in the middle) that strips STARTTLS from its EHLO but asks for AUTH
        self.sink = SinkFactory(SinkBehaviour(starttls=False, auth=("relayuser", "relaypw")))
        self.port = reactor.listenTCP(0, self.sink, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def cfg(self, starttls: str) -> SmarthostConfig:
        return SmarthostConfig("127.0.0.1", self.port.getHost().port, starttls, username="relayuser",
                               password="relaypw", helo="mx.example.test")

    async def test_client_never_auths_in_clear(self) -> None:
        """opportunistic or off against a server without STARTTLS: no AUTH, nothing sent, recipient temporary."""
        path = os.path.join(tmpdir(self), "m.eml")
        with open(path, "wb") as f:
            f.write(b"Subject: x\r\n\r\ny\r\n")
        for mode in ("opportunistic", "off"):
            result = await deliver(reactor, self.cfg(mode), "alice@example.test", ["x@remote.example"], path, 20)
            self.assertEqual(result.temporary(), ["x@remote.example"], mode)
            self.assertIn("never sent without TLS", result.replies["x@remote.example"][1])
        self.assertFalse([c for c in self.sink.commands if c.upper().startswith("AUTH")], self.sink.commands)
        self.assertFalse([c for c in self.sink.commands if "relaypw" in c or "cmVsYXlwdw" in c])
        self.assertEqual(self.sink.messages, [])
        refused = [e for e in self.events if e.get("event") == "relay.auth_without_tls"]
        self.assertEqual(len(refused), 2)

    async def test_queued_mail_waits(self) -> None:
        """Through the relay runner the message stays queued with a temporary error and one clear log line."""
        await self.h.queue.enqueue("alice@example.test", ["x@remote.example"], b"Subject: q\r\n\r\nbody\r\n")
        runner = RelayRunner(self.h.queue, reactor, "mx.example.test", self.h.policy.is_local, self.h.factory.local,
                             self.cfg("opportunistic"), poll_interval=0.05, backoff=(3600.0,))
        runner.start()
        self.addCleanup(runner.stop)
        while not any(e.attempts for e in self.h.queue.index.values()):
            await deferLater(reactor, 0.02, lambda: None)
        entry = next(iter(self.h.queue.index.values()))
        self.assertEqual(entry.recipients, ["x@remote.example"])
        self.assertIn("credentials are never sent without TLS", entry.last_error)
        self.assertFalse([c for c in self.sink.commands if c.upper().startswith(("AUTH", "MAIL"))])
        self.assertEqual(len([e for e in self.events if e.get("event") == "relay.auth_without_tls"]), 1)
