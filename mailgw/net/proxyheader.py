"""Parsing a received HAProxy PROXY protocol header (v1 text, v2 binary): bounded, incremental, no transport.

Spec: haproxy.org/download/2.9/doc/proxy-protocol.txt ("The PROXY protocol, Versions 1 & 2").
`parse(buffer)` is called with everything received so far: None means "need more bytes"; a
`Parsed` gives the client address (None for v1 UNKNOWN, v2 LOCAL and non-IP families: the spec
says to use the connection's own addresses then) and how many bytes the header took; anything
else raises ProxyHeaderError. Memory is bounded: a v1 line is at most 107 bytes (spec §2.1), a v2
header at most `V2_MAX` bytes (its length field is checked before anything is buffered beyond it).
The encoder (what a publishing rule sends) is mailgw.publish.proxyproto.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional

V1_PREFIX = b"PROXY "
V1_MAX = 107  # "PROXY TCP6 <39> <39> 65535 65535\r\n", spec §2.1
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
V2_MAX = V2_FIXED + 2048  # addresses (at most 216) and TLVs; more is refused rather than buffered
_V2_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}  # AF_INET, AF_INET6, AF_UNIX (spec §2.2)
HEADER_MAX = max(V1_MAX, V2_MAX)


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header (the connection is refused)."""


@dataclass(frozen=True)
class Parsed:
    """A complete header: the client's (host, port), or None to keep the connection's own; bytes consumed."""

    source: Optional[tuple[str, int]]
    destination: Optional[tuple[str, int]]
    consumed: int
    version: int


def parse(buffer: bytes) -> Optional[Parsed]:
    """The header at the start of `buffer`, None if it is a valid but incomplete start; ProxyHeaderError otherwise."""
    if buffer[:len(V2_SIGNATURE)] == V2_SIGNATURE[:len(buffer)]:
        return _v2(buffer) if len(buffer) >= V2_FIXED else None
    if buffer[:len(V1_PREFIX)] == V1_PREFIX[:len(buffer)]:
        return _v1(buffer)
    raise ProxyHeaderError("no PROXY protocol header")


def _v1(buffer: bytes) -> Optional[Parsed]:
    end = buffer.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buffer) >= V1_MAX or b"\n" in buffer[:V1_MAX]:
            raise ProxyHeaderError("v1 header without CRLF in 107 bytes")
        return None
    fields = buffer[:end].split(b" ")
    consumed = end + 2
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return Parsed(None, None, consumed, 1)  # "the receiver must ignore anything presented before the CRLF"
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("v1 header is not PROXY TCP4|TCP6 src dst sport dport")
    version = 4 if fields[1] == b"TCP4" else 6
    src, dst = (_v1_address(f, version) for f in fields[2:4])
    sport, dport = (_v1_port(f) for f in fields[4:6])
    return Parsed((src, sport), (dst, dport), consumed, 1)


def _v1_address(field: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(field.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("v1 header address is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"v1 header address is not IPv{version}")
    return _plain(address)


def _v1_port(field: bytes) -> int:
    # decimal, 0..65535, no sign and no leading zero (spec §2.1)
    if not field.isdigit() or len(field) > 5 or (len(field) > 1 and field[:1] == b"0") or int(field) > 65535:
        raise ProxyHeaderError("v1 header port is not 0..65535")
    return int(field)


def _v2(buffer: bytes) -> Optional[Parsed]:
    version_command, family, length = struct.unpack("!BBH", buffer[12:16])
    if version_command >> 4 != 2:
        raise ProxyHeaderError("v2 header with a version other than 2")
    command = version_command & 0x0F
    if command not in (0x0, 0x1):
        raise ProxyHeaderError("v2 header command is neither LOCAL nor PROXY")
    total = V2_FIXED + length
    if total > V2_MAX:
        raise ProxyHeaderError(f"v2 header of {total} bytes (more than {V2_MAX})")
    if len(buffer) < total:
        return None
    if command == 0x0:  # LOCAL: health checks and the proxy's own connections
        return Parsed(None, None, total, 2)
    address_family, transport = family >> 4, family & 0x0F
    size = _V2_ADDRESS_SIZES.get(address_family)
    if address_family == 0x0 or address_family == 0x3:  # UNSPEC or AF_UNIX: keep the connection's addresses
        if size is not None and length < size:
            raise ProxyHeaderError("v2 header shorter than its address block")
        return Parsed(None, None, total, 2)
    if size is None or transport not in (0x1,):
        raise ProxyHeaderError("v2 header is not TCP over IPv4 or IPv6")
    if length < size:
        raise ProxyHeaderError("v2 header shorter than its address block")
    body = buffer[V2_FIXED:V2_FIXED + size]
    width = 4 if address_family == 0x1 else 16
    src = _plain(ipaddress.ip_address(body[:width]))
    dst = _plain(ipaddress.ip_address(body[width:2 * width]))
    sport, dport = struct.unpack("!HH", body[2 * width:2 * width + 4])
    return Parsed((src, sport), (dst, dport), total, 2)


def _plain(address: "ipaddress.IPv4Address | ipaddress.IPv6Address") -> str:
    """IPv4-mapped IPv6 (a dual-stack proxy's IPv4 client) as the IPv4 address it is."""
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped if mapped is not None else address)
