"""NTLM acceptor: pyspnego as client (v2 accepted, v1 refused), MIC, replay, malformed and oversized blobs."""

from __future__ import annotations

import base64
import os
import struct
from typing import Any

import spnego
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailgw.auth import ntlm_wire as w
from mailgw.auth.md4 import md4, nt_hash
from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.ntlm import DirectoryNTLMVerifier, NTLMAcceptor, ntlmv2_keys
from mailgw.auth.service import AuthService
from mailgw.errors import AuthFailed
from mailgw.interfaces import ClientInfo, SASLChallenge, SASLSuccess

CLIENT = ClientInfo("imap", "legacy", "192.0.2.20", 4000, tls=True)
CURL_TYPE1 = base64.b64decode("TlRMTVNTUAABAAAABoIIAAAAAAAAAAAAAAAAAAAAAAA=")


def make_service(**acceptor_kw: Any) -> AuthService:
    directory = MemoryDirectory()
    directory.add_user("alice", "S3cret!", ["alice@example.test"], nt_hash=nt_hash("S3cret!"))
    directory.add_user("bob", "hunter2", nt_hash=nt_hash("hunter2"))
    directory.add_user("nohash", "pw")
    acceptor = NTLMAcceptor(DirectoryNTLMVerifier([directory]), domain="EXAMPLE", dns_domain="example.test",
                            hostname="gw", **acceptor_kw)
    return AuthService([directory], Clock(), failure_delay=0, ntlm=acceptor)


class NTLMCase(SynchronousTestCase):
    def spnego_client(self, user: str, password: str, level: int = 3) -> Any:
        old = os.environ.get("LM_COMPAT_LEVEL")
        os.environ["LM_COMPAT_LEVEL"] = str(level)
        try:
            return spnego.client(user, password, hostname="gw", protocol="ntlm")
        finally:
            if old is None:
                del os.environ["LM_COMPAT_LEVEL"]
            else:
                os.environ["LM_COMPAT_LEVEL"] = old

    def type2(self, exchange: Any, type1: bytes) -> bytes:
        result = self.successResultOf(exchange.step(type1))
        self.assertIsInstance(result, SASLChallenge)
        return result.data  # type: ignore[no-any-return]

    def login(self, service: AuthService, user: str, password: str, level: int = 3,
              mutate: Any = None) -> Any:
        """Run a whole exchange with pyspnego; returns the final Deferred."""
        client = self.spnego_client(user, password, level)
        exchange = service.start("NTLM", CLIENT)
        self.assertEqual(self.successResultOf(exchange.step(None)), SASLChallenge(b""))
        type3 = client.step(self.type2(exchange, client.step()))
        return exchange.step(mutate(type3) if mutate else type3)


class AcceptTests(NTLMCase):
    def test_v2_accepted(self) -> None:
        """An NTLMv2 response from pyspnego (with a MIC) proves the password; identity is the canonical uid."""
        service = make_service()
        for name in ("EXAMPLE\\alice", "alice", "example.test\\ALICE", "alice@example.test"):
            result = self.successResultOf(self.login(service, name, "S3cret!"))
            self.assertIsInstance(result, SASLSuccess)
            self.assertEqual(result.identity.user, "alice", name)

    def test_wrong_password_and_unknown_user(self) -> None:
        """Wrong password, unknown user and a user without an NT hash fail alike."""
        service = make_service()
        reasons = []
        for user, pw in (("EXAMPLE\\alice", "wrong"), ("EXAMPLE\\mallory", "S3cret!"), ("EXAMPLE\\nohash", "pw")):
            f = self.failureResultOf(self.login(service, user, pw), AuthFailed)
            self.assertEqual(f.value.public, "Authentication failed.")
            reasons.append(f.value.reason)
        self.assertEqual(reasons, ["bad_password"] * 3)

    def test_v1_refused(self) -> None:
        """NTLMv1 and v1-ESS (LM_COMPAT_LEVEL 0-2) are refused even with the right password; level 3 works."""
        service = make_service()
        for level in (0, 1, 2):
            f = self.failureResultOf(self.login(service, "EXAMPLE\\alice", "S3cret!", level), AuthFailed)
            self.assertEqual(f.value.reason, "ntlm_v1_refused", level)
        self.successResultOf(self.login(service, "EXAMPLE\\alice", "S3cret!", 3))

    def test_other_domain_refused(self) -> None:
        """A domain outside the allowed list fails like a wrong password."""
        f = self.failureResultOf(self.login(make_service(), "OTHER\\alice", "S3cret!"), AuthFailed)
        self.assertEqual(f.value.reason, "ntlm_domain")


class HardeningTests(NTLMCase):
    def test_mic_tampered_or_dropped(self) -> None:
        """A changed or zeroed MIC fails when MsvAvFlags says a MIC is present (CVE-2019-1040)."""
        service = make_service()
        for mic in (b"\x01" * 16, b"\0" * 16):
            mutate = lambda t3, mic=mic: t3[:72] + mic + t3[88:]  # noqa: E731
            f = self.failureResultOf(self.login(service, "EXAMPLE\\alice", "S3cret!", mutate=mutate), AuthFailed)
            self.assertEqual(f.value.reason, "ntlm_mic")

    def test_replay_fails(self) -> None:
        """A Type 3 replayed on a new exchange (new challenge) fails."""
        service = make_service()
        client = self.spnego_client("EXAMPLE\\alice", "S3cret!")
        first = service.start("NTLM", CLIENT)
        type3 = client.step(self.type2(first, client.step()))
        self.successResultOf(first.step(type3))
        second = service.start("NTLM", CLIENT)
        self.type2(second, CURL_TYPE1)
        self.failureResultOf(second.step(type3), AuthFailed)

    def test_fresh_challenges(self) -> None:
        """Every exchange gets a new random server challenge."""
        service = make_service()
        challenges = {self.type2(service.start("NTLM", CLIENT), CURL_TYPE1)[24:32] for _ in range(2000)}
        self.assertEqual(len(challenges), 2000)

    def test_curl_type2(self) -> None:
        """curl's Type 1 gets an OEM Type 2 with ESS and TargetInfo ending in a timestamp, and no LM_KEY."""
        type2 = self.type2(make_service().start("NTLM", CLIENT), CURL_TYPE1)
        flags = struct.unpack_from("<I", type2, 20)[0]
        self.assertTrue(flags & w.NEGOTIATE_EXTENDED_SESSIONSECURITY)
        self.assertTrue(flags & w.NEGOTIATE_TARGET_INFO)
        self.assertTrue(flags & w.NEGOTIATE_OEM)
        self.assertFalse(flags & (w.NEGOTIATE_LM_KEY | w.NEGOTIATE_UNICODE))
        length, _, offset = struct.unpack_from("<HHI", type2, 40)
        pairs = w.parse_av_pairs(type2[offset:offset + length])
        self.assertEqual(pairs[w.AV_NB_DOMAIN], "EXAMPLE".encode("utf-16-le"))
        self.assertEqual(len(pairs[w.AV_TIMESTAMP]), 8)

    def test_oem_v2_client(self) -> None:
        """A curl-shaped OEM Type 3 (no MIC, empty domain, 24-byte LMv2) is verified."""
        service = make_service()
        exchange = service.start("NTLM", CLIENT)
        type2 = self.type2(exchange, CURL_TYPE1)
        self.assertIsInstance(self.successResultOf(exchange.step(curl_type3(type2, "alice", "S3cret!"))), SASLSuccess)
        exchange = service.start("NTLM", CLIENT)
        type2 = self.type2(exchange, CURL_TYPE1)
        self.failureResultOf(exchange.step(curl_type3(type2, "alice", "wrong")), AuthFailed)

    def test_require_mic(self) -> None:
        """With require_mic, a client that sends no MIC (curl) is refused."""
        service = make_service(require_mic=True)
        exchange = service.start("NTLM", CLIENT)
        type2 = self.type2(exchange, CURL_TYPE1)
        f = self.failureResultOf(exchange.step(curl_type3(type2, "alice", "S3cret!")), AuthFailed)
        self.assertEqual(f.value.reason, "ntlm_mic_missing")


def curl_type3(type2: bytes, user: str, password: str, domain: str = "", nt: bytes | None = None) -> bytes:
    """Build a Type 3 the way curl 7.88 does in NTLMv2 mode (OEM names, LMv2 + NTLMv2, no MIC)."""
    challenge = type2[24:32]
    length, _, offset = struct.unpack_from("<HHI", type2, 40)
    info = type2[offset:offset + length]
    blob = b"\x01\x01\0\0\0\0\0\0" + b"\0" * 8 + b"C" * 8 + b"\0" * 4 + info + b"\0" * 4
    if nt is None:
        key = __import__("hmac").new(nt_hash(password), (user.upper() + domain).encode("utf-16-le"), "md5").digest()
        proof = __import__("hmac").new(key, challenge + blob, "md5").digest()
        nt = proof + blob
    lm = b"L" * 24
    fields = [lm, nt, domain.encode(), user.encode(), b"WORKSTATION", b""]
    off = 64
    header = b"NTLMSSP\0" + struct.pack("<I", 3)
    payload = b""
    for value in fields:
        header += struct.pack("<HHI", len(value), len(value), off + len(payload))
        payload += value
    return header + struct.pack("<I", 0x00898206) + payload


class MalformedTests(NTLMCase):
    def run_type3(self, type3: bytes) -> AuthFailed:
        service = make_service()
        exchange = service.start("NTLM", CLIENT)
        self.type2(exchange, CURL_TYPE1)
        with capturedLogs() as events:
            f = self.failureResultOf(exchange.step(type3), AuthFailed)
        self.assertEqual([e["reason"] for e in events if e.get("event") == "auth_failed"], [f.value.reason])
        self.assertEqual([e for e in events if "log_failure" in e], [])  # no traceback logged
        return f.value  # type: ignore[no-any-return]

    def good(self) -> bytes:
        type2 = self.type2(make_service().start("NTLM", CLIENT), CURL_TYPE1)
        return curl_type3(type2, "alice", "S3cret!")

    def test_malformed_type3(self) -> None:
        """Bad signature/type, truncation, buffers past the end or into the header, bad blobs: clean failures."""
        good = self.good()
        cases = {
            "signature": b"NTLMSSX\0" + good[8:],
            "type": good[:8] + struct.pack("<I", 2) + good[12:],
            "truncated": good[:40],
            "nt_response": good[:20] + struct.pack("<HHI", 200, 200, len(good) - 10) + good[28:],
            "user": good[:36] + struct.pack("<HHI", 5, 5, 8) + good[44:],
            "huge_offset": good[:36] + struct.pack("<HHI", 5, 5, 0xFFFFFFFF) + good[44:],
            "size": good + b"\0" * 9000,
            "empty": b"",
        }
        for name, data in cases.items():
            reason = self.run_type3(data).reason
            self.assertTrue(reason.startswith("ntlm_malformed:"), (name, reason))

    def test_bad_blobs(self) -> None:
        """An NTLMv2 blob shorter than 28 bytes, with wrong RespType, or without MsvAvEOL fails as malformed."""
        type2 = self.type2(make_service().start("NTLM", CLIENT), CURL_TYPE1)
        for nt in (b"P" * 16 + b"\x01\x01" + b"\0" * 10,                       # blob < 28
                   b"P" * 16 + b"\x02\x01" + b"\0" * 26 + b"\0" * 4,           # RespType 2
                   b"P" * 16 + b"\x01\x01" + b"\0" * 26 + b"\x07\0\x40\0"):   # AV pair past end, no EOL
            self.assertTrue(self.run_type3(curl_type3(type2, "alice", "", nt=nt)).reason.startswith("ntlm_malformed"))

    def test_anonymous(self) -> None:
        """An empty user or empty NT response (anonymous) is refused."""
        type2 = self.type2(make_service().start("NTLM", CLIENT), CURL_TYPE1)
        self.assertEqual(self.run_type3(curl_type3(type2, "", "x")).reason, "ntlm_anonymous")
        self.assertEqual(self.run_type3(curl_type3(type2, "alice", "x", nt=b"")).reason, "ntlm_anonymous")

    def test_type1_errors(self) -> None:
        """A Type 3 first, garbage, an oversized or charset-less Type 1 fails cleanly."""
        service = make_service()
        for data in (self.good(), b"\xff" * 100, b"NTLMSSP\0\x01\0\0\0" + b"\0" * 4, CURL_TYPE1 + b"\0" * 10000):
            f = self.failureResultOf(service.start("NTLM", CLIENT).step(data), AuthFailed)
            self.assertTrue(f.value.reason.startswith("ntlm_malformed:"), f.value.reason)

    def test_fuzz_truncations(self) -> None:
        """Every prefix and every single-byte corruption of a Type 3 fails with AuthFailed only."""
        good = self.good()
        service = make_service()
        for i in range(len(good)):
            for data in (good[:i], good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:]):
                exchange = service.start("NTLM", CLIENT)
                self.type2(exchange, CURL_TYPE1)
                self.failureResultOf(exchange.step(data), AuthFailed)


class PrimitiveTests(SynchronousTestCase):
    def test_md4_vectors(self) -> None:
        """MD4 and NT hash match RFC 1320 and known NT hash vectors."""
        self.assertEqual(md4(b"").hex(), "31d6cfe0d16ae931b73c59d7e0c089c0")
        self.assertEqual(md4(b"abc").hex(), "a448017aaf21d8525fc10ae87aa6729d")
        self.assertEqual(md4(b"message digest").hex(), "d9130a8164549fe818874806e1c7014b")
        self.assertEqual(md4(b"a" * 1000).hex(), md4(b"a" * 1000).hex())
        self.assertEqual(nt_hash("password").hex().upper(), "8846F7EAEE8FB117AD06BDD830B7586C")
        self.assertEqual(nt_hash("hunter2").hex().upper(), "6608E4BC7B2B7A5F77CE3573570775AF")

    def test_md4_matches_pyspnego(self) -> None:
        """Our MD4 agrees with pyspnego's pure-Python one over lengths 0..130."""
        from spnego._ntlm_raw.md4 import md4 as their_md4
        for n in range(131):
            data = bytes(range(n % 256))[:n] * 1
            self.assertEqual(md4(data), their_md4(data), n)

    def test_ntlmv2_keys_wrong_hash(self) -> None:
        """A response checked against another hash does not match."""
        blob = b"\x01\x01" + b"\0" * 40
        ok, _ = ntlmv2_keys(nt_hash("a"), "u", "", b"c" * 8, b"p" * 16 + blob)
        self.assertFalse(ok)


class PropertyTests(SynchronousTestCase):
    def test_parsers_raise_only_ntlm_malformed(self) -> None:
        """On arbitrary bytes (with a valid header or not) the parsers return or raise NTLMMalformed only."""
        from hypothesis import given, settings, strategies as st

        header3 = st.binary(max_size=400).map(lambda b: b"NTLMSSP\0\x03\0\0\0" + b)

        @settings(max_examples=400, deadline=None)
        @given(st.one_of(st.binary(max_size=400), header3), st.booleans())
        def check(data: bytes, unicode: bool) -> None:
            for parse in (lambda: w.parse_negotiate(data), lambda: w.parse_authenticate(data, unicode),
                          lambda: w.parse_av_pairs(data)):
                try:
                    parse()
                except w.NTLMMalformed:
                    pass

        check()

    def test_verifier_interface(self) -> None:
        """DirectoryNTLMVerifier provides INTLMVerifier."""
        from zope.interface.verify import verifyObject
        from mailgw.interfaces import INTLMVerifier
        verifyObject(INTLMVerifier, DirectoryNTLMVerifier([MemoryDirectory()]))
