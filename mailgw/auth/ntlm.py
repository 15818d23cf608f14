"""Server-side NTLMv2 as a SASL mechanism (IMAP AUTHENTICATE NTLM, SMTP AUTH NTLM), and its verifier.

The acceptor builds the Type 2 (fresh random challenge, TargetInfo, ESS), parses the Type 3
before any lookup, refuses NTLMv1/LM/anonymous, then asks an INTLMVerifier: either
`DirectoryNTLMVerifier` (NT hashes from the backends) or `winbind.WinbindNTLMVerifier`
(Samba's ntlm_auth). Verification per MS-NLMP 3.3.2 needs only HMAC-MD5 and the NT hash.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import TYPE_CHECKING, Optional, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from mailgw.auth import ntlm_wire as w
from mailgw.auth.base import first_found
from mailgw.interfaces import (ClientInfo, IDirectory, Identity, INTLMVerifier, ISASLExchange, SASLChallenge,
                               SASLSuccess)

if TYPE_CHECKING:
    from mailgw.auth.service import AuthService

_DUMMY_HASH = b"\x5a" * 16  # unknown users cost the same HMACs as known ones (no timing oracle)
_FILETIME_EPOCH = 11644473600  # seconds from 1601-01-01 to 1970-01-01


def _hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def ntlmv2_keys(nt_hash: bytes, user: str, domain: str, server_challenge: bytes,
                nt_response: bytes) -> tuple[bool, bytes]:
    """(proof matches, SessionBaseKey) for an NTLMv2 response (MS-NLMP 3.3.2).

    The user is upper-cased, the domain is used exactly as the client sent it.
    """
    response_key = _hmac_md5(nt_hash, (user.upper() + domain).encode("utf-16-le"))
    proof = _hmac_md5(response_key, server_challenge + nt_response[16:])
    return hmac.compare_digest(proof, nt_response[:16]), _hmac_md5(response_key, proof)


def rc4(key: bytes, data: bytes) -> bytes:
    """RC4 (for unwrapping the 16-byte EncryptedRandomSessionKey only)."""
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) & 0xFF])
    return bytes(out)


def mic_valid(session_base_key: bytes, msg: w.Authenticate, type1: bytes, type2: bytes) -> bool:
    """Check the Type 3 MIC (MS-NLMP 3.2.5.1.2; CVE-2019-1040 "Drop the MIC")."""
    if msg.mic is None or msg.mic == b"\0" * 16:
        return False
    key = session_base_key
    if msg.flags & w.NEGOTIATE_KEY_EXCH and len(msg.session_key) == 16:
        key = rc4(session_base_key, msg.session_key)
    zeroed = msg.raw[:72] + b"\0" * 16 + msg.raw[88:]
    return hmac.compare_digest(_hmac_md5(key, type1 + type2 + zeroed), msg.mic)


class SessionVerifier:
    """INTLMVerifier's two methods from one coroutine `_verify` -> (identity, SessionBaseKey) | None."""

    async def _verify(self, user: str, domain: str, server_challenge: bytes,
                      nt_response: bytes) -> Optional[tuple[Identity, bytes]]:
        raise NotImplementedError

    def verify_session(self, user: str, domain: str, server_challenge: bytes,
                       nt_response: bytes) -> "Deferred[Optional[tuple[Identity, bytes]]]":
        return Deferred.fromCoroutine(self._verify(user, domain, server_challenge, nt_response))

    def verify(self, user: str, domain: str, server_challenge: bytes,
               nt_response: bytes) -> "Deferred[Optional[Identity]]":
        return self.verify_session(user, domain, server_challenge, nt_response).addCallback(
            lambda r: r[0] if r else None)


@implementer(INTLMVerifier)
class DirectoryNTLMVerifier(SessionVerifier):
    """Verifies NTLMv2 responses with NT hashes from the backends (first that holds one, in order)."""

    def __init__(self, backends: Sequence[IDirectory]) -> None:
        self.backends = list(backends)

    async def _verify(self, user: str, domain: str, server_challenge: bytes,
                      nt_response: bytes) -> Optional[tuple[Identity, bytes]]:
        found = await first_found(self.backends, lambda backend: backend.nt_hash(user))
        ok, key = ntlmv2_keys(found[1] if found else _DUMMY_HASH, user, domain, server_challenge, nt_response)
        return (found[0], key) if ok and found is not None else None



class NTLMAcceptor:
    """The NTLM mechanism factory that AuthService(ntlm=...) takes.

    `domain` is the NetBIOS domain shown in the Type 2; `allowed_domains` (default: "", `domain`,
    `dns_domain`) are compared case-insensitively with the client's domain. `require_mic`
    refuses clients that send no MIC (curl sends none; Windows and pyspnego do).
    """

    mechanism = "NTLM"

    def __init__(self, verifier: INTLMVerifier, domain: str = "WORKGROUP", dns_domain: str = "",
                 hostname: str = "MAILGW", dns_hostname: str = "",
                 allowed_domains: Optional[Sequence[str]] = None, require_mic: bool = False,
                 clock: Optional[IReactorTime] = None) -> None:
        self.verifier = verifier
        self.domain = domain.upper()
        self.dns_domain = dns_domain
        self.hostname = hostname.upper()
        self.dns_hostname = dns_hostname or (f"{hostname.lower()}.{dns_domain}" if dns_domain else hostname.lower())
        names = allowed_domains if allowed_domains is not None else ("", domain, dns_domain)
        self.allowed_domains = frozenset(d.casefold() for d in names)
        self.require_mic = require_mic
        self.clock = clock

    def start(self, service: "AuthService", client: ClientInfo) -> ISASLExchange:
        return NTLMExchange(self, service, client)

    def target_info(self, now: float) -> bytes:
        """AV pairs (always UTF-16LE) ending in MsvAvTimestamp and MsvAvEOL."""
        filetime = int((now + _FILETIME_EPOCH) * 10_000_000)
        names = [(w.AV_NB_DOMAIN, self.domain), (w.AV_NB_COMPUTER, self.hostname),
                 (w.AV_DNS_DOMAIN, self.dns_domain), (w.AV_DNS_COMPUTER, self.dns_hostname)]
        return w.av_pairs([(av_id, text.encode("utf-16-le")) for av_id, text in names]
                          + [(w.AV_TIMESTAMP, struct.pack("<Q", filetime))])


@implementer(ISASLExchange)
class NTLMExchange:
    """One NTLM exchange: [empty challenge] -> Type 1 -> Type 2 -> Type 3 -> success or failure."""

    mechanism = "NTLM"

    def __init__(self, acceptor: NTLMAcceptor, service: "AuthService", client: ClientInfo) -> None:
        self._acceptor = acceptor
        self._service = service
        self._client = client
        self._state = "negotiate"
        self._type1 = b""
        self._type2 = b""
        self._challenge = b""
        self._flags = 0

    def _reject(self, reason: str, login: str = "") -> "Deferred[SASLChallenge | SASLSuccess]":
        self._state = "done"
        self._challenge = b""
        return self._service.reject(self._client, self.mechanism, login, reason)

    def step(self, response: Optional[bytes]) -> "Deferred[SASLChallenge | SASLSuccess]":
        if self._state == "negotiate":
            if not response:
                return succeed(SASLChallenge(b""))  # MS-SMTPNTLM/MS-OXIMAP4: empty "334 " / "+ "
            return self._negotiate(response)
        if self._state == "authenticate" and response is not None:
            return self._authenticate(response)
        return self._reject("ntlm_malformed:state")

    def _negotiate(self, data: bytes) -> "Deferred[SASLChallenge | SASLSuccess]":
        try:
            negotiate = w.parse_negotiate(data)
            self._flags = w.challenge_flags(negotiate.flags)
        except w.NTLMMalformed as e:
            return self._reject(f"ntlm_malformed:{e.field}")
        self._challenge = os.urandom(8)  # fresh per exchange, consumed by the first Type 3
        clock = self._acceptor.clock or self._service.reactor
        self._type1 = data
        self._type2 = w.build_challenge(self._flags, self._challenge, self._acceptor.domain,
                                        self._acceptor.target_info(clock.seconds()))
        self._state = "authenticate"
        return succeed(SASLChallenge(self._type2))

    def _authenticate(self, data: bytes) -> "Deferred[SASLChallenge | SASLSuccess]":
        challenge, self._challenge, self._state = self._challenge, b"", "done"
        try:
            msg = w.parse_authenticate(data, bool(self._flags & w.NEGOTIATE_UNICODE))
            nt = msg.nt_response
            pairs = w.parse_av_pairs(nt[44:], "nt_blob") if len(nt) >= 48 else {}
        except w.NTLMMalformed as e:
            return self._reject(f"ntlm_malformed:{e.field}")
        shown = f"{msg.domain}\\{msg.user}" if msg.domain else msg.user
        if msg.flags & w.NEGOTIATE_ANONYMOUS or not msg.user or not nt:
            return self._reject("ntlm_anonymous", shown)  # MS-NLMP 3.2.5.1.2
        if len(nt) == 24:
            return self._reject("ntlm_v1_refused", msg.user)  # NTLMv1 / v1-ESS: crackable, never accepted
        if len(nt) < 48 or nt[16] != 1 or nt[17] != 1:
            return self._reject("ntlm_malformed:nt_response", msg.user)
        if msg.domain.casefold() not in self._acceptor.allowed_domains:
            return self._reject("ntlm_domain", msg.user)
        flags = pairs.get(w.AV_FLAGS, b"")
        wants_mic = len(flags) == 4 and bool(struct.unpack("<I", flags)[0] & w.AV_FLAG_MIC_PRESENT)
        if self._acceptor.require_mic and not wants_mic:
            return self._reject("ntlm_mic_missing", msg.user)
        type1, type2 = self._type1, self._type2

        async def ask(cleaned: str) -> tuple[Optional[Identity], str]:
            result = await self._acceptor.verifier.verify_session(msg.user, msg.domain, challenge, nt)
            if result is None:
                return None, "bad_password"
            identity, session_key = result
            if wants_mic and not mic_valid(session_key, msg, type1, type2):
                return None, "ntlm_mic"
            return identity, ""

        d = self._service.check(msg.user, self._client, self.mechanism, ask)
        return d.addCallback(SASLSuccess)
