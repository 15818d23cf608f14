"""NTLM message codec (MS-NLMP 2.2): parse Type 1 and Type 3, build Type 2. Bytes in, values out.

Every length and offset is checked against the message before it is used; parsing is O(len)
and allocates nothing larger than the input. Only NTLMMalformed escapes, naming the field, so
a hostile blob becomes a clean authentication failure (Exim CVE-2023-42114/-42115/-42116).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

SIGNATURE = b"NTLMSSP\0"
MAX_MESSAGE = 8192  # a real Type 3 is < 1 KiB; the SASL line limit is 12 KiB of base64

NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_OEM = 0x00000002
REQUEST_TARGET = 0x00000004
NEGOTIATE_SIGN = 0x00000010
NEGOTIATE_SEAL = 0x00000020
NEGOTIATE_LM_KEY = 0x00000080
NEGOTIATE_NTLM = 0x00000200
NEGOTIATE_ANONYMOUS = 0x00000800
NEGOTIATE_ALWAYS_SIGN = 0x00008000
TARGET_TYPE_DOMAIN = 0x00010000
NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
NEGOTIATE_TARGET_INFO = 0x00800000
NEGOTIATE_VERSION = 0x02000000
NEGOTIATE_128 = 0x20000000
NEGOTIATE_KEY_EXCH = 0x40000000
NEGOTIATE_56 = 0x80000000

# Flags echoed to the client when it asks for them (never LM_KEY: MS-NLMP 3.2.5.1.1).
_ECHOED = (NEGOTIATE_SIGN | NEGOTIATE_SEAL | NEGOTIATE_ALWAYS_SIGN | NEGOTIATE_VERSION | NEGOTIATE_128
           | NEGOTIATE_KEY_EXCH | NEGOTIATE_56)

AV_EOL = 0
AV_NB_COMPUTER = 1
AV_NB_DOMAIN = 2
AV_DNS_COMPUTER = 3
AV_DNS_DOMAIN = 4
AV_FLAGS = 6
AV_TIMESTAMP = 7
AV_FLAG_MIC_PRESENT = 0x2

_TYPE3_HEADER = 64  # through NegotiateFlags; Version (8) and MIC (16) may follow
_MIC_OFFSET = 72
VERSION = struct.pack("<BBH3xB", 10, 0, 20348, 15)  # a Windows-like version, NTLMSSP_REVISION_W2K3


class NTLMMalformed(Exception):
    """A message that is not a well-formed NTLM message; `field` says where (for logs)."""

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(field)


@dataclass(frozen=True)
class Negotiate:
    """Type 1: only the flags matter to the acceptor."""

    flags: int


@dataclass(frozen=True)
class Authenticate:
    """Type 3, decoded and bounds-checked; `raw` is kept for the MIC."""

    flags: int
    lm_response: bytes
    nt_response: bytes
    domain: str
    user: str
    workstation: str
    session_key: bytes  # EncryptedRandomSessionKey (may be empty)
    mic: Optional[bytes]  # the 16 bytes at offset 72, if the payload leaves room for them
    raw: bytes


def _u16(data: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", data, off)[0])


def _u32(data: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", data, off)[0])


def _header(data: bytes, message_type: int, minimum: int) -> None:
    if len(data) > MAX_MESSAGE:
        raise NTLMMalformed("size")
    if len(data) < minimum:
        raise NTLMMalformed("truncated")
    if data[:8] != SIGNATURE:
        raise NTLMMalformed("signature")
    if _u32(data, 8) != message_type:
        raise NTLMMalformed("type")


def parse_negotiate(data: bytes) -> Negotiate:
    """Parse a Type 1 (NEGOTIATE_MESSAGE)."""
    _header(data, 1, 16)
    return Negotiate(_u32(data, 12))


def _field(data: bytes, at: int, payload_start: int, name: str) -> bytes:
    length, _maxlen, offset = struct.unpack_from("<HHI", data, at)
    if length == 0:
        return b""
    if offset < payload_start or offset + length > len(data):
        raise NTLMMalformed(name)  # past the end, or pointing into the header
    return data[offset:offset + length]


def _text(raw: bytes, unicode: bool, name: str) -> str:
    try:
        if unicode:
            if len(raw) % 2:
                raise NTLMMalformed(name)
            return raw.decode("utf-16-le")
        return raw.decode("cp437")  # OEM code page; ASCII in practice (ntlm.md §3)
    except UnicodeDecodeError:
        raise NTLMMalformed(name) from None


def parse_authenticate(data: bytes, unicode: bool) -> Authenticate:
    """Parse a Type 3 (AUTHENTICATE_MESSAGE); `unicode` is what the Type 2 negotiated."""
    _header(data, 3, _TYPE3_HEADER)
    flags = _u32(data, 60)
    offsets = [struct.unpack_from("<HHI", data, at) for at in range(12, 60, 8)]
    # The payload begins where the first buffer does; everything before it is header (+ Version, MIC).
    starts = [off for length, _m, off in offsets if length]
    payload_start = max(_TYPE3_HEADER, min(starts)) if starts else len(data)
    lm = _field(data, 12, _TYPE3_HEADER, "lm_response")
    nt = _field(data, 20, _TYPE3_HEADER, "nt_response")
    domain = _text(_field(data, 28, _TYPE3_HEADER, "domain"), unicode, "domain")
    user = _text(_field(data, 36, _TYPE3_HEADER, "user"), unicode, "user")
    workstation = _text(_field(data, 44, _TYPE3_HEADER, "workstation"), unicode, "workstation")
    session_key = _field(data, 52, _TYPE3_HEADER, "session_key")
    mic = data[_MIC_OFFSET:_MIC_OFFSET + 16] if payload_start >= _MIC_OFFSET + 16 else None
    return Authenticate(flags, lm, nt, domain, user, workstation, session_key, mic, data)


def parse_av_pairs(data: bytes, name: str = "av_pairs") -> dict[int, bytes]:
    """AV_PAIR list (MS-NLMP 2.2.2.1) up to MsvAvEOL, which must be present."""
    pairs: dict[int, bytes] = {}
    off = 0
    while off + 4 <= len(data):
        av_id, av_len = struct.unpack_from("<HH", data, off)
        off += 4
        if av_id == AV_EOL:
            return pairs
        if off + av_len > len(data):
            raise NTLMMalformed(name)
        pairs.setdefault(av_id, data[off:off + av_len])
        off += av_len
    raise NTLMMalformed(name)  # no MsvAvEOL


def av_pairs(items: list[tuple[int, bytes]]) -> bytes:
    """Serialise AV pairs, appending MsvAvEOL."""
    out = b"".join(struct.pack("<HH", av_id, len(value)) + value for av_id, value in items)
    return out + struct.pack("<HH", AV_EOL, 0)


def challenge_flags(client_flags: int) -> int:
    """Type 2 flags for a client's Type 1 flags; raises NTLMMalformed if it offers no charset."""
    if client_flags & NEGOTIATE_UNICODE:
        charset = NEGOTIATE_UNICODE
    elif client_flags & NEGOTIATE_OEM:
        charset = NEGOTIATE_OEM
    else:
        raise NTLMMalformed("charset")
    # ESS always: curl answers NTLMv2 only when the Type 2 carries it (ntlm.md §1).
    return (charset | REQUEST_TARGET | NEGOTIATE_NTLM | TARGET_TYPE_DOMAIN | NEGOTIATE_TARGET_INFO
            | NEGOTIATE_EXTENDED_SESSIONSECURITY | (client_flags & _ECHOED))


def build_challenge(flags: int, server_challenge: bytes, target_name: str, target_info: bytes) -> bytes:
    """A Type 2 (CHALLENGE_MESSAGE) with Version field and payload: target name, then target info."""
    name = target_name.encode("utf-16-le" if flags & NEGOTIATE_UNICODE else "cp437", "replace")
    header_len = 56
    name_off = header_len
    info_off = name_off + len(name)
    version = VERSION if flags & NEGOTIATE_VERSION else b"\0" * 8
    return (SIGNATURE + struct.pack("<I", 2)
            + struct.pack("<HHI", len(name), len(name), name_off)
            + struct.pack("<I", flags) + server_challenge + b"\0" * 8
            + struct.pack("<HHI", len(target_info), len(target_info), info_off)
            + version + name + target_info)
