"""The development default and the example offer NTLM only where clients can use it: curl and mbsync
succeed with their own (default) mechanism choice, and NTLM works on the NTLM-only server."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from mailgw import assemble
from mailgw.config import load_config
from mailgw.config.default import development_config
from mailgw.tap import prepare_development_state
from tests.admin.helpers_ops import close_runners, port_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "etc", "mailgw.toml.example")
PASSWORD = "Corr3ct-horse"


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        raise SkipTest(f"{tool} is not installed")


class OfferedMechanismsTests(SynchronousTestCase):
    """Offline: which servers of the shipped configurations offer NTLM."""

    def _check(self, text: str) -> None:
        data = tomllib.loads(text)  # the raw tables: the files they name need not exist here
        for name, imap in data["imap"].items():
            if imap.get("require_tls", True) or imap.get("bind_tls"):
                self.assertNotIn("ntlm", imap["auth"], f"imap.{name} is a TLS server")
        for name, sub in data["submission"].items():
            self.assertNotIn("ntlm", sub["auth"], f"submission.{name} is a TLS server")
        ntlm_only = [n for n, s in data["imap"].items() if s["auth"] == ["ntlm"] and not s["require_tls"]]
        self.assertEqual(ntlm_only, ["legacy"])

    def test_development_default(self) -> None:
        """The embedded default's TLS servers offer basic; NTLM is on its NTLM-only server."""
        self._check(development_config("/tmp/unused"))

    def test_example(self) -> None:
        """etc/mailgw.toml.example's TLS servers offer basic; NTLM is on imap.legacy."""
        with open(EXAMPLE) as handle:
            self._check(handle.read())


def _environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


class DevelopmentDefaultClientTests(TestCase):
    """The development default (ports moved to 0), a user added with `mailgwctl user add`, real clients."""

    timeout = 120

    @classmethod
    def setUpClass(cls) -> None:
        # The files once per class: the certificate, the first user and `user add` cost seconds.
        cls.base = tempfile.mkdtemp(prefix="mailgw-devmech-")
        cls.state = os.path.join(cls.base, "state")
        prepare_development_state(cls.state, io.StringIO())  # certificate and first user
        text = re.sub(r"tcp:\d+:interface=127\.0\.0\.1", "tcp:0:interface=127.0.0.1", development_config(cls.state))
        text = re.sub(r"(?m)^manhole = .*$", "", text)  # no SSH host key needed here
        text = text.replace('failure_delay = "2s"', 'failure_delay = "0s"')
        cls.path = os.path.join(cls.base, "mailgw.toml")
        with open(cls.path, "w") as handle:
            handle.write(text)
        cls.added = subprocess.run([sys.executable, "-m", "mailgw.cli", "--config", cls.path, "user", "add", "bob",
                                    "--address", "bob@localhost", "--password-stdin"], input=PASSWORD + "\n",
                                   capture_output=True, text=True, env=_environment(), timeout=60)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.base, True)

    def setUp(self) -> None:
        self.assertEqual(self.added.returncode, 0, self.added.stderr)
        self.assertIn("NT hash", self.added.stderr)  # stored by default: the configuration offers NTLM
        root = assemble.build(load_config(self.path), reactor, environ={})
        root.privilegedStartService()
        root.startService()
        self.addCleanup(root.stopService)
        self.addCleanup(close_runners, root.gateway.auth)
        self.gateway = root.gateway
        self.ca_file = os.path.join(self.state, "tls", "localhost.pem")
        self.mechs: list[str] = []
        self.failed: list[str] = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: dict) -> None:
        if event.get("event") == "auth_ok":
            self.mechs.append(event["mech"])
        elif event.get("event") == "auth_failed":
            self.failed.append(f"{event['mech']}:{event['reason']}")

    def port(self, label: str) -> int:
        return port_of(self.gateway, label)

    def tool(self, argv: list[str]) -> "defer.Deferred[subprocess.CompletedProcess[str]]":
        return deferToThread(subprocess.run, argv, capture_output=True, text=True, timeout=60)

    @defer.inlineCallbacks
    def test_curl_imaps_default(self):
        """curl without --login-options logs in on IMAPS (it picks PLAIN: NTLM is not offered there)."""
        _need("curl")
        r = yield self.tool(["curl", "-sS", "--cacert", self.ca_file, f"imaps://localhost:{self.port('imap.default.bind_tls[0]')}/",
                            "-u", f"bob:{PASSWORD}"])
        self.assertEqual(r.returncode, 0, r.stderr + " " + " ".join(self.failed))
        self.assertIn("INBOX", r.stdout)
        self.assertEqual(self.mechs, ["PLAIN"])

    @defer.inlineCallbacks
    def test_curl_starttls_default(self):
        """curl --ssl-reqd on the STARTTLS port logs in with its default choice."""
        _need("curl")
        r = yield self.tool(["curl", "-sS", "--ssl-reqd", "--cacert", self.ca_file,
                            f"imap://localhost:{self.port('imap.default.bind[0]')}/", "-u", f"bob:{PASSWORD}"])
        self.assertEqual(r.returncode, 0, r.stderr + " " + " ".join(self.failed))
        self.assertEqual(self.mechs, ["PLAIN"])

    @defer.inlineCallbacks
    def test_curl_ntlm_only_server(self):
        """On the NTLM-only server curl's default is NTLM(v2), which works for a user added by `user add`."""
        _need("curl")
        r = yield self.tool(["curl", "-sS", f"imap://127.0.0.1:{self.port('imap.legacy.bind[0]')}/", "-u", f"bob:{PASSWORD}"])
        self.assertEqual(r.returncode, 0, r.stderr + " " + " ".join(self.failed))
        self.assertIn("INBOX", r.stdout)
        self.assertEqual(self.mechs, ["NTLM"])

    @defer.inlineCallbacks
    def test_mbsync_default(self):
        """mbsync (cyrus-sasl, which has an NTLMv1-only NTLM plugin) syncs with its default AuthMechs over IMAPS."""
        _need("mbsync")
        local = os.path.join(self.base, "local")
        os.makedirs(local)
        conf = os.path.join(self.base, "mbsyncrc")
        with open(conf, "w") as handle:
            handle.write(f"IMAPAccount dev\nHost 127.0.0.1\nPort {self.port('imap.default.bind_tls[0]')}\nUser bob\n"
                         f"Pass {PASSWORD}\nSSLType IMAPS\nCertificateFile {self.ca_file}\n\n"
                         "IMAPStore remote\nAccount dev\n\n"
                         f"MaildirStore near\nPath {local}/\nInbox {local}/INBOX\n\n"
                         "Channel sync\nFar :remote:\nNear :near:\nPatterns INBOX\nCreate Near\nSyncState *\n")
        r = yield self.tool(["mbsync", "-q", "-c", conf, "sync"])
        self.assertEqual(r.returncode, 0, r.stderr + " " + " ".join(self.failed))
        self.assertEqual(self.mechs, ["PLAIN"])

    @defer.inlineCallbacks
    def test_fetchmail_default(self):
        """fetchmail (NTLMv1 only, tries NTLM first when offered) checks the mailbox over IMAPS without a failed attempt."""
        _need("fetchmail")
        rc = os.path.join(self.base, f"fetchmailrc-{os.getpid()}")
        with open(os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(f"poll 127.0.0.1 service {self.port('imap.default.bind_tls[0]')} protocol IMAP\n"
                         f"  user bob password \"{PASSWORD}\" ssl no sslcertck\n")  # a test certificate
        r = yield self.tool(["fetchmail", "--check", "--nosyslog", "-f", rc])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr + " " + " ".join(self.failed))  # 1: no mail, 3: auth error
        self.assertIn(self.mechs, (["PLAIN"], ["LOGIN"], ["PASSWORD"]))
        self.assertEqual(self.failed, [])  # offered NTLM, it tries NTLMv1 first: one refusal per poll
