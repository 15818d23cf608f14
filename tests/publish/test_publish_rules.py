"""Client sets, admission limits and denial logging of publishing rules, and PROXY header encoding."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailgw.publish import ClientSet, PublishRule, RuleSettings, client_set_for
from mailgw.publish.proxyproto import encode, encode_v1, encode_v2
from mailgw.publish.rules import ADMIT, DENIED, LIMITED


class FakeConnection:
    """Stands in for the forwarder's connection in the rule's registry."""

    user: Optional[str] = None

    def __init__(self, host: str) -> None:
        self.peer_host, self.peer = host, f"{host}:1234"
        self.kicked = False

    def info(self) -> dict[str, Any]:
        return {"peer": self.peer}

    def kick(self) -> None:
        self.kicked = True


def rule(clients: ClientSet, name: str = "r", **settings: Any) -> tuple[PublishRule, Clock]:
    clock = Clock()
    return PublishRule(RuleSettings(name=name, listen="tcp:0", target_host="10.0.0.25", target_port=143, **settings),
                       clients, clock), clock


class ClientSetTests(SynchronousTestCase):
    def test_cidr_matching(self) -> None:
        """IPv4 and IPv6 networks match their members only, including the network's edges."""
        cs = ClientSet(["198.51.100.0/24", "2001:db8:100::/48", "203.0.113.7"])
        for host in ("198.51.100.0", "198.51.100.255", "203.0.113.7", "2001:db8:100::1", "2001:db8:100:ffff::9"):
            self.assertTrue(cs.allows(host), host)
        for host in ("198.51.101.0", "198.51.99.255", "203.0.113.8", "2001:db8:101::1", "::1", "not-an-ip", ""):
            self.assertFalse(cs.allows(host), host)

    def test_mapped_and_scoped_addresses(self) -> None:
        """An IPv4 client on a dual-stack listener (::ffff:a.b.c.d) matches IPv4 networks; zone ids are ignored."""
        cs = ClientSet(["192.0.2.0/24", "fe80::/10"])
        self.assertTrue(cs.allows("::ffff:192.0.2.9"))
        self.assertFalse(cs.allows("::ffff:192.0.3.9"))
        self.assertTrue(cs.allows("fe80::1%eth0"))

    def test_any_and_empty(self) -> None:
        """"any" allows every address; an empty set allows none."""
        self.assertTrue(ClientSet.any().allows("192.0.2.1"))
        self.assertTrue(ClientSet.any().allows("::1"))
        self.assertFalse(ClientSet([]).allows("127.0.0.1"))
        self.assertEqual(ClientSet([]).describe(), "(nobody)")

    def test_overlapping_networks_collapse(self) -> None:
        """Overlapping and adjacent networks behave as their union."""
        cs = ClientSet(["10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8"])
        self.assertTrue(cs.allows("10.1.2.3"))
        self.assertTrue(cs.allows("11.255.255.255"))
        self.assertFalse(cs.allows("12.0.0.0"))

    def test_named_sets_resolved(self) -> None:
        """A rule's clients may mix CIDRs and [client_sets.NAME] names; "any" anywhere means any."""
        named = {"branch_offices": ("198.51.100.0/24", "2001:db8:100::/48")}
        cs = client_set_for(["branch_offices", "192.0.2.1/32"], named)
        self.assertTrue(cs.allows("198.51.100.20"))
        self.assertTrue(cs.allows("2001:db8:100::20"))
        self.assertTrue(cs.allows("192.0.2.1"))
        self.assertFalse(cs.allows("192.0.2.2"))
        self.assertTrue(client_set_for(["branch_offices", "any"], named).allow_any)


class AdmissionTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """PublishRule provides IPublishRule, the seam admin and reload code use."""
        from zope.interface.verify import verifyObject

        from mailgw.interfaces import IPublishRule
        self.assertTrue(verifyObject(IPublishRule, rule(ClientSet.any())[0]))

    def test_admit_and_limits(self) -> None:
        """Clients outside the set are DENIED; past max_per_client or max_connections they are LIMITED."""
        r, _ = rule(ClientSet(["192.0.2.0/24"]), max_per_client=2, max_connections=3)
        self.assertEqual(r.admit("198.51.100.1", 1, "x"), DENIED)
        a, b = FakeConnection("192.0.2.1"), FakeConnection("192.0.2.1")
        for conn in (a, b):
            self.assertEqual(r.admit(conn.peer_host, 1, "x"), ADMIT)
            r.opened(conn, conn.peer_host)
        self.assertEqual(r.admit("192.0.2.1", 1, "x"), LIMITED)
        self.assertEqual(r.admit("192.0.2.2", 1, "x"), ADMIT)
        r.opened(FakeConnection("192.0.2.2"), "192.0.2.2")
        self.assertEqual(r.admit("192.0.2.3", 1, "x"), LIMITED)
        r.closed(a, a.peer_host)
        r.closed(a, a.peer_host)  # twice is harmless
        self.assertEqual(r.admit("192.0.2.1", 1, "x"), ADMIT)
        self.assertEqual(len(r.active_connections()), 2)

    def test_denial_log_rate_limited(self) -> None:
        """Denials log at most once a second per rule; the next line says how many were suppressed."""
        r, clock = rule(ClientSet([]))
        with capturedLogs() as events:
            for _ in range(5):
                r.admit("192.0.2.9", 4000, "203.0.113.5:143")
            clock.advance(1.0)
            r.admit("192.0.2.9", 4001, "203.0.113.5:143")
        denies = [e for e in events if e.get("event") == "forward_deny"]
        self.assertEqual([d["mailgw_line"] for d in denies], [
            "forward_deny rule=r peer=192.0.2.9:4000 dst=203.0.113.5:143 reason=not_in_client_set",
            "forward_deny rule=r peer=192.0.2.9:4001 dst=203.0.113.5:143 reason=not_in_client_set suppressed=4",
        ])

    def test_set_clients_kicks_revoked(self) -> None:
        """Swapping the client set closes only the open connections the new set refuses."""
        r, _ = rule(ClientSet.any())
        keep, drop = FakeConnection("192.0.2.1"), FakeConnection("198.51.100.1")
        for conn in (keep, drop):
            r.opened(conn, conn.peer_host)
        self.assertEqual(r.set_clients(ClientSet(["192.0.2.0/24"])), 1)
        self.assertEqual((keep.kicked, drop.kicked), (False, True))
        self.assertEqual(r.admit("198.51.100.1", 1, "x"), DENIED)
        self.assertEqual(r.set_clients(ClientSet([]), close_existing=False), 0)
        self.assertFalse(keep.kicked)


    def test_reconfigure(self) -> None:
        """A reload swaps settings and clients of a rule; a changed listen endpoint is refused and nothing changes."""
        r, _ = rule(ClientSet.any(), max_per_client=1)
        moved = RuleSettings(name="r", listen="tcp:1", target_host="10.0.0.26", target_port=143)
        self.assertRaises(ValueError, r.reconfigure, moved, ClientSet([]))
        self.assertTrue(r.clients.allow_any)
        new = RuleSettings(name="r", listen="tcp:0", target_host="10.0.0.26", target_port=1143, max_per_client=5)
        r.reconfigure(new, ClientSet(["192.0.2.0/24"]))
        self.assertEqual((r.settings.target, r.settings.max_per_client), ("10.0.0.26:1143", 5))
        self.assertEqual(r.admit("198.51.100.1", 1, "x"), DENIED)


class ProxyProtocolTests(SynchronousTestCase):
    def test_v1(self) -> None:
        """v1 is one ASCII line: family, source, destination, ports (spec §2.1 examples)."""
        self.assertEqual(encode_v1("192.0.2.1", 56324, "203.0.113.5", 143),
                         b"PROXY TCP4 192.0.2.1 203.0.113.5 56324 143\r\n")
        self.assertEqual(encode_v1("2001:db8::1", 56324, "2001:db8::ff", 993),
                         b"PROXY TCP6 2001:db8::1 2001:db8::ff 56324 993\r\n")
        self.assertEqual(encode_v1("::ffff:192.0.2.1", 1, "::ffff:203.0.113.5", 2),
                         b"PROXY TCP4 192.0.2.1 203.0.113.5 1 2\r\n")
        self.assertEqual(encode_v1("192.0.2.1", 1, "2001:db8::ff", 2),
                         b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::ff 1 2\r\n")
        self.assertEqual(encode_v1("/run/sock", 0, "x", 0), b"PROXY UNKNOWN\r\n")

    def test_v2(self) -> None:
        """v2 is the 12-byte signature, 0x21 (v2 PROXY), family, length and packed addresses (spec §2.2)."""
        sig = b"\r\n\r\n\x00\r\nQUIT\n"
        self.assertEqual(encode_v2("192.0.2.1", 0xDC04, "203.0.113.5", 143),
                         sig + b"\x21\x11\x00\x0c" + b"\xc0\x00\x02\x01" + b"\xcb\x00\x71\x05" + b"\xdc\x04\x00\x8f")
        self.assertEqual(encode_v2("2001:db8::1", 1, "2001:db8::ff", 993),
                         sig + b"\x21\x21\x00\x24"
                         + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"
                         + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\xff" + b"\x00\x01\x03\xe1")
        self.assertEqual(encode_v2("unix", 0, "unix", 0), sig + b"\x20\x00\x00\x00")

    def test_off(self) -> None:
        """proxy_protocol = "off" sends nothing; an unknown version is a programming error."""
        self.assertEqual(encode("off", "192.0.2.1", 1, "192.0.2.2", 2), b"")
        self.assertRaises(ValueError, encode, "v3", "192.0.2.1", 1, "192.0.2.2", 2)
