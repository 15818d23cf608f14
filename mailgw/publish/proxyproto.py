"""HAProxy PROXY protocol headers (v1 text, v2 binary) that a publishing rule sends to its target.

Encoding only: bytes out, no transport. Spec: haproxy.org/download/2.9/doc/proxy-protocol.txt
("The PROXY protocol, Versions 1 & 2"). IPv4-mapped IPv6 addresses (an IPv4 client reaching a
dual-stack listener) are sent as IPv4; when source and destination families still differ, both are
sent as IPv6 (IPv4-mapped), which the spec allows a receiver to accept.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Optional, Union

from mailgw.net.clients import peer_address

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL = 0x20  # version 2, command LOCAL
_V2_TCP4 = 0x11  # AF_INET, STREAM
_V2_TCP6 = 0x21  # AF_INET6, STREAM
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"


def _pair(src_host: str, dst_host: str) -> Optional[tuple[IPAddress, IPAddress]]:
    """Both addresses in one family, or None when either is not an IP address."""
    src, dst = peer_address(src_host), peer_address(dst_host)
    if src is None or dst is None:
        return None
    if src.version != dst.version:
        src, dst = (a if a.version == 6 else ipaddress.IPv6Address(f"::ffff:{a}") for a in (src, dst))
    return src, dst


def encode_v1(src_host: str, src_port: int, dst_host: str, dst_port: int) -> bytes:
    """`PROXY TCP4|TCP6 src dst sport dport\\r\\n`, or `PROXY UNKNOWN\\r\\n` for non-IP peers (spec §2.1)."""
    pair = _pair(src_host, dst_host)
    if pair is None:
        return V1_UNKNOWN
    src, dst = pair
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {_text(src)} {_text(dst)} {src_port} {dst_port}\r\n".encode("ascii")


def _text(address: IPAddress) -> str:
    """Mapped addresses in the dotted form (`::ffff:192.0.2.1`), as newer Pythons print them."""
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def encode_v2(src_host: str, src_port: int, dst_host: str, dst_port: int) -> bytes:
    """The 16-byte v2 preamble and address block (spec §2.2); LOCAL with no address for non-IP peers."""
    pair = _pair(src_host, dst_host)
    if pair is None:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, 0x00, 0)
    src, dst = pair
    body = src.packed + dst.packed + struct.pack("!HH", src_port, dst_port)
    family = _V2_TCP4 if src.version == 4 else _V2_TCP6
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(body)) + body


def encode(version: str, src_host: str, src_port: int, dst_host: str, dst_port: int) -> bytes:
    """The header for a rule's `proxy_protocol` setting: b"" for "off", else the v1 or v2 bytes."""
    if version == "off":
        return b""
    if version == "v1":
        return encode_v1(src_host, src_port, dst_host, dst_port)
    if version == "v2":
        return encode_v2(src_host, src_port, dst_host, dst_port)
    raise ValueError(f"unknown PROXY protocol version {version!r}")
