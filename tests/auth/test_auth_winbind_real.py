"""NTLM pass-through to the real Samba `ntlm_auth` (in `--password` test mode, no domain needed).

Runs when `ntlm_auth` is at /usr/bin/ntlm_auth or MAILGW_TEST_NTLM_AUTH (with MAILGW_TEST_NTLM_AUTH_LIBS
as LD_LIBRARY_PATH); `tests/support/fetch_ntlm_auth.sh DIR` unpacks one without installing Samba.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import spnego
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mailgw.auth.ntlm import NTLMAcceptor
from mailgw.auth.ratelimit import AuthLimits, Rate
from mailgw.auth.service import AuthService
from mailgw.auth.winbind import WinbindNTLMVerifier
from mailgw.errors import AuthFailed, AuthUnavailable
from mailgw.interfaces import ClientInfo

NTLM_AUTH = os.environ.get("MAILGW_TEST_NTLM_AUTH") or shutil.which("ntlm_auth") or ""
TLS = ClientInfo("imap", "imap.secure", "192.0.2.40", tls=True)


class RealNtlmAuthTests(TestCase):
    def setUp(self) -> None:
        if not NTLM_AUTH or not os.access(NTLM_AUTH, os.X_OK):
            raise self.skipTest("Samba ntlm_auth not available (see tests/support/fetch_ntlm_auth.sh)")
        base = self.mktemp()
        for sub in ("state", "cache", "private", "lock", "run"):
            os.makedirs(os.path.join(base, sub))
        self.conf = os.path.join(base, "smb.conf")
        with open(self.conf, "w") as f:
            f.write("[global]\nworkgroup = EXAMPLE\n" + "".join(
                f"{key} = {os.path.join(base, sub)}\n" for key, sub in (
                    ("state directory", "state"), ("cache directory", "cache"), ("private dir", "private"),
                    ("lock directory", "lock"), ("pid directory", "run"), ("ncalrpc dir", "run"))))
        self.env = dict(os.environ)
        if os.environ.get("MAILGW_TEST_NTLM_AUTH_LIBS"):
            self.env["LD_LIBRARY_PATH"] = os.environ["MAILGW_TEST_NTLM_AUTH_LIBS"]

    def service(self, *extra: str) -> AuthService:
        argv = [NTLM_AUTH, f"--configfile={self.conf}", "--helper-protocol=ntlm-server-1", *extra]
        verifier = WinbindNTLMVerifier(argv, reactor, helpers=1, timeout=20, env=self.env)
        self.addCleanup(verifier.stop)
        return AuthService([], reactor, failure_delay=0, ntlm=NTLMAcceptor(verifier, domain="EXAMPLE"),
                           limits=AuthLimits(per_ip=Rate(100, 60), per_user_ip=Rate(100, 60)))

    @inlineCallbacks
    def ntlm(self, service: AuthService, password: str):  # type: ignore[no-untyped-def]
        client: Any = spnego.client("EXAMPLE\\alice", password, hostname="gw", protocol="ntlm")
        exchange = service.start("NTLM", TLS)
        type2 = yield exchange.step(client.step())
        result = yield exchange.step(client.step(type2.data))
        return result.identity

    @inlineCallbacks
    def test_password_mode(self):  # type: ignore[no-untyped-def]
        """Right password logs in (MIC checked with ntlm_auth's session key); wrong is a failure; no desync."""
        service = self.service("--password=S3cret")
        self.assertEqual((yield self.ntlm(service, "S3cret")).user, "alice")
        for _ in range(2):  # Samba adds a stray "." after each failure: replies must stay in step
            e = yield self.assertFailure(self.ntlm(service, "wrong"), AuthFailed)
            self.assertEqual(e.reason, "bad_password")
        self.assertEqual((yield self.ntlm(service, "S3cret")).user, "alice")

    @inlineCallbacks
    def test_no_winbindd_is_outage(self):  # type: ignore[no-untyped-def]
        """Without winbindd, ntlm_auth cannot check: a temporary failure, not a bad password."""
        service = self.service()
        yield self.assertFailure(self.ntlm(service, "S3cret"), AuthUnavailable)
