"""NTLM pass-through to an ntlm_auth-style helper pool: success, failure, crash, hang, outage, concurrency."""

from __future__ import annotations

import os
import sys
from typing import Any

import spnego
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.auth.md4 import nt_hash
from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.ntlm import NTLMAcceptor
from mailgw.auth.ratelimit import AuthLimits, Rate
from mailgw.auth.service import AuthService
from mailgw.auth.winbind import WinbindNTLMVerifier, encode_request, parse_reply
from mailgw.errors import AuthFailed, AuthUnavailable
from mailgw.interfaces import ClientInfo, Identity

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_ntlm_auth.py")
TLS = ClientInfo("smtp", "relay", "192.0.2.30", tls=True)


class WinbindCase(TestCase):
    def make(self, mode: str = "ok", timeout: float = 10.0, lookup: Any = None) -> tuple[AuthService, str]:
        log = self.mktemp()
        env = dict(os.environ, FAKE_NTLM_MODE=mode, FAKE_NTLM_LOG=log,
                   FAKE_NTLM_USERS=f"alice:{nt_hash('S3cret!').hex()},bob:{nt_hash('hunter2').hex()}")
        self.verifier = WinbindNTLMVerifier([sys.executable, HELPER], reactor, helpers=2, timeout=timeout,
                                            lookup=lookup, env=env)
        self.addCleanup(self.verifier.stop)
        limits = AuthLimits(per_ip=Rate(1000, 60), per_user_ip=Rate(1000, 60))
        return AuthService([], reactor, failure_delay=0, limits=limits,
                           ntlm=NTLMAcceptor(self.verifier, domain="CORP")), log

    @inlineCallbacks
    def ntlm(self, service: AuthService, user: str, password: str):  # type: ignore[no-untyped-def]
        client = spnego.client(user, password, hostname="gw", protocol="ntlm")
        exchange = service.start("NTLM", TLS)
        type2 = yield exchange.step(client.step())
        result = yield exchange.step(client.step(type2.data))
        return result.identity


class WinbindTests(WinbindCase):
    @inlineCallbacks
    def test_accept_and_refuse(self):  # type: ignore[no-untyped-def]
        """The helper's Yes logs in (with the MIC checked from its session key); No is a plain failure."""
        service, _ = self.make()
        self.assertEqual((yield self.ntlm(service, "CORP\\Alice", "S3cret!")), Identity("alice", (), "winbind"))
        e = yield self.assertFailure(self.ntlm(service, "CORP\\alice", "wrong"), AuthFailed)
        self.assertEqual(e.reason, "bad_password")
        yield self.assertFailure(self.ntlm(service, "CORP\\mallory", "x"), AuthFailed)

    @inlineCallbacks
    def test_lookup_identity(self):  # type: ignore[no-untyped-def]
        """With a lookup, the identity (and its addresses) comes from the directory."""
        directory = MemoryDirectory(name="ad")
        directory.add_user("alice", "unused", ["alice@corp.example"])
        service, _ = self.make(lookup=directory.lookup)
        identity = yield self.ntlm(service, "CORP\\alice", "S3cret!")
        self.assertEqual(identity, Identity("alice", ("alice@corp.example",), "ad"))

    @inlineCallbacks
    def test_v1_never_forwarded(self):  # type: ignore[no-untyped-def]
        """NTLMv1 is refused by the acceptor before anything reaches the helper."""
        service, log = self.make()
        old = os.environ.get("LM_COMPAT_LEVEL")
        os.environ["LM_COMPAT_LEVEL"] = "1"
        try:
            client = spnego.client("CORP\\alice", "S3cret!", hostname="gw", protocol="ntlm")
        finally:
            os.environ.pop("LM_COMPAT_LEVEL") if old is None else os.environ.__setitem__("LM_COMPAT_LEVEL", old)
        exchange = service.start("NTLM", TLS)
        type2 = yield exchange.step(client.step())
        e = yield self.assertFailure(exchange.step(client.step(type2.data)), AuthFailed)
        self.assertEqual(e.reason, "ntlm_v1_refused")
        self.assertFalse(os.path.exists(log))

    @inlineCallbacks
    def test_crash_is_outage_then_recovers(self):  # type: ignore[no-untyped-def]
        """A helper that dies mid-request gives AuthUnavailable; the pool replaces it."""
        service, _ = self.make(mode="crash")
        yield self.assertFailure(self.ntlm(service, "CORP\\alice", "S3cret!"), AuthUnavailable)
        self.verifier._env["FAKE_NTLM_MODE"] = "ok"  # type: ignore[index]
        self.assertEqual((yield self.ntlm(service, "CORP\\alice", "S3cret!")).user, "alice")

    @inlineCallbacks
    def test_hang_times_out(self):  # type: ignore[no-untyped-def]
        """A helper that never answers is killed after the timeout: AuthUnavailable."""
        service, _ = self.make(mode="hang", timeout=0.5)
        yield self.assertFailure(self.ntlm(service, "CORP\\alice", "S3cret!"), AuthUnavailable)

    @inlineCallbacks
    def test_winbind_offline(self):  # type: ignore[no-untyped-def]
        """A winbind error that is not a credential status is a temporary failure."""
        service, _ = self.make(mode="offline")
        yield self.assertFailure(self.ntlm(service, "CORP\\alice", "S3cret!"), AuthUnavailable)

    @inlineCallbacks
    def test_pool_concurrency(self):  # type: ignore[no-untyped-def]
        """Ten parallel logins are served by at most two helper processes."""
        service, log = self.make()
        results = yield gatherResults([self.ntlm(service, "CORP\\bob", "hunter2") for _ in range(10)])
        self.assertEqual({r.user for r in results}, {"bob"})
        with open(log) as f:
            pids = {line.split()[0] for line in f}
        self.assertLessEqual(len(pids), 2)


class ProtocolTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """WinbindNTLMVerifier provides INTLMVerifier."""
        from zope.interface.verify import verifyObject
        from mailgw.interfaces import INTLMVerifier
        verifier = WinbindNTLMVerifier(["/bin/false"], reactor)
        verifyObject(INTLMVerifier, verifier)
        self.successResultOf(verifier.stop())

    def test_request_encoding(self) -> None:
        """Requests carry base64 names, hex challenge and response, and end with a dot line."""
        text = encode_request("al:ce", "CORP", b"\x01" * 8, b"\x02" * 3).decode()
        self.assertEqual(text.splitlines(), ["Username:: YWw6Y2U=", "NT-Domain:: Q09SUA==",
                                             "LANMAN-Challenge: 0101010101010101", "NT-Response: 020202",
                                             "Request-User-Session-Key: Yes", "."])
        self.assertEqual(parse_reply([b"Authenticated: Yes", b"User-Session-Key: AB", b"Foo:: YmFy"]),
                         {"authenticated": "Yes", "user-session-key": "AB", "foo": "bar"})
