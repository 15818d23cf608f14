"""The PROXY protocol header parser: round trips with the encoder, bounds, and arbitrary bytes (hypothesis)."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailgw.net.proxyheader import V1_MAX, V2_MAX, V2_SIGNATURE, Parsed, ProxyHeaderError, parse
from mailgw.publish.proxyproto import encode_v1, encode_v2

ports = st.integers(0, 65535)
v4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
v6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1)).filter(
    lambda a: ipaddress.IPv6Address(a).ipv4_mapped is None)
pairs = st.one_of(st.tuples(v4, v4), st.tuples(v6, v6))


def outcome(data: bytes) -> "Parsed | None | str":
    try:
        return parse(data)
    except ProxyHeaderError:
        return "refused"


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(pairs, ports, ports, st.sampled_from([encode_v1, encode_v2]), st.binary(max_size=40))
    def test_encoded_headers_parse_back(self, hosts, sport, dport, encode, rest) -> None:
        """Whatever the encoder sends, the parser returns the same addresses and consumes exactly the header."""
        header = encode(hosts[0], sport, hosts[1], dport)
        parsed = parse(header + rest)
        self.assertIsNotNone(parsed)
        self.assertEqual(parsed.source, (str(ipaddress.ip_address(hosts[0])), sport))
        self.assertEqual(parsed.destination, (str(ipaddress.ip_address(hosts[1])), dport))
        self.assertEqual(parsed.consumed, len(header))

    @settings(max_examples=200, deadline=None)
    @given(pairs, ports, ports, st.sampled_from([encode_v1, encode_v2]), st.data())
    def test_every_proper_prefix_needs_more(self, hosts, sport, dport, encode, data) -> None:
        """A header cut anywhere is "need more bytes", never an error (TCP may split it anywhere)."""
        header = encode(hosts[0], sport, hosts[1], dport)
        cut = data.draw(st.integers(0, len(header) - 1))
        self.assertIsNone(parse(header[:cut]))

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_never_crash(self, data) -> None:
        """Any bytes give a header, "need more", or ProxyHeaderError; a header never claims more than it was given."""
        result = outcome(data)
        if isinstance(result, Parsed):
            self.assertLessEqual(result.consumed, len(data))
        if result is None:
            self.assertLess(len(data), max(V1_MAX, V2_MAX))


class VectorTests(SynchronousTestCase):
    def test_v1_unknown_and_v2_local_keep_the_connection_address(self) -> None:
        """PROXY UNKNOWN and v2 LOCAL (health checks) carry no client address."""
        self.assertEqual(parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nA"), Parsed(None, None, 35, 1))
        local = V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)
        self.assertEqual(parse(local), Parsed(None, None, 16, 2))

    def test_v2_tlvs_are_skipped(self) -> None:
        """A v2 header with TLVs after the addresses is consumed whole (HAProxy sends ALPN, authority, ...)."""
        header = encode_v2("192.0.2.1", 1234, "192.0.2.2", 993)
        tlv = b"\x01\x00\x02h2"
        longer = header[:14] + struct.pack("!H", 12 + len(tlv)) + header[16:] + tlv
        self.assertEqual(parse(longer + b"x").consumed, len(longer))

    def test_mapped_addresses_become_ipv4(self) -> None:
        """An IPv4-mapped client (dual-stack proxy) is reported as its IPv4 address."""
        self.assertEqual(parse(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 5 6\r\n").source, ("192.0.2.1", 5))

    def test_refusals(self) -> None:
        """Bad families, ports, versions, lengths and over-long v1 lines are refused."""
        for bad in (b"GET / HTTP/1.0\r\n", b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n", b"PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n",
                    b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n", b"PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n",
                    b"PROXY TCP4 1.2.3.4  1.2.3.5 1 2\r\n", b"PROXY " + b"x" * (V1_MAX + 1),
                    b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n",
                    V2_SIGNATURE + struct.pack("!BBH", 0x11, 0x11, 12) + bytes(12),
                    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 4) + bytes(4),
                    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x12, 12) + bytes(12),
                    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, V2_MAX)):
            self.assertEqual(outcome(bad), "refused", bad)
