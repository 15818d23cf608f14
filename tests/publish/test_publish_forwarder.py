"""The forwarder over real loopback sockets: echo, denial, PROXY headers, limits, half-close, failures, idle."""

from __future__ import annotations

import os
import socket
import struct
import time

from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from mailgw.observe import metrics
from mailgw.publish import ClientSet, PublishFactory, PublishRule, RuleSettings

from .support import (Capture, Echo, GreetThenFIN, ReplyAtEOF, closed_port, connect, read_all, refused, start_rule,
                      start_target, until)


def _metric(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


class ForwarderTests(TestCase):
    """Run with splice(2) when possible (the default for plain TCP)."""

    use_splice = True
    timeout = 30

    @inlineCallbacks
    def test_echo_raw_bytes(self) -> None:
        """Every byte value goes through both ways unchanged and is counted per rule and direction."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port)
        payload = bytes(range(256)) * 4096  # 1 MiB

        def client() -> bytes:
            sock = connect(listen)
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return read_all(sock)
        self.assertEqual((yield threads.deferToThread(client)), payload)
        yield until(reactor, lambda: not rule.active_connections())
        self.assertEqual(len(target.connections), 1)
        self.assertEqual(_metric("mailgw_forward_bytes_total", rule=rule.name, direction="in"), len(payload))
        self.assertEqual(_metric("mailgw_forward_bytes_total", rule=rule.name, direction="out"), len(payload))
        self.assertEqual(_metric("mailgw_publish_connections_total", rule=rule.name, result="accepted"), 1)

    @inlineCallbacks
    def test_ipv6_client_and_target(self) -> None:
        """An IPv6 listener forwards to an IPv6 target ([::1]) with half-close intact."""
        target, port = start_target(reactor, self, ReplyAtEOF, interface="::1")
        rule, listen = start_rule(reactor, self, port, interface="::1", target_host="::1",
                                  clients=ClientSet(["::1/128"]))

        def client() -> bytes:
            sock = connect(listen, "::1")
            sock.sendall(b"six")
            sock.shutdown(socket.SHUT_WR)
            return read_all(sock)
        self.assertEqual((yield threads.deferToThread(client)), b"got:six")
        self.assertEqual(rule.settings.target, f"[::1]:{port}")

    @inlineCallbacks
    def test_unix_socket_listener(self) -> None:
        """A rule may listen on a unix: endpoint (clients "any"); bytes and half-close go through to TCP."""
        target, port = start_target(reactor, self, ReplyAtEOF)
        rule = PublishRule(RuleSettings(name="unix", listen="unix:x", target_host="127.0.0.1", target_port=port,
                                        splice=self.use_splice), ClientSet.any(), reactor)
        path = os.path.join(self.mktemp() + ".sock")
        listening = reactor.listenUNIX(path, PublishFactory(rule, reactor))
        self.addCleanup(listening.stopListening)

        def client() -> bytes:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                sock.sendall(b"local")
                sock.shutdown(socket.SHUT_WR)
                return read_all(sock)
        self.assertEqual((yield threads.deferToThread(client)), b"got:local")

    @inlineCallbacks
    def test_target_by_host_name(self) -> None:
        """A target given as a host name (resolved per connection by Twisted) forwards and half-closes alike."""
        target, port = start_target(reactor, self, ReplyAtEOF)
        rule, listen = start_rule(reactor, self, port, target_host="localhost")

        def client() -> bytes:
            sock = connect(listen)
            sock.sendall(b"by name")
            sock.shutdown(socket.SHUT_WR)
            return read_all(sock)
        self.assertEqual((yield threads.deferToThread(client)), b"got:by name")

    @inlineCallbacks
    def test_active_connections_listed(self) -> None:
        """An open connection is listed with its peer, target, path and byte counts; the gauge counts it."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port)
        sock = yield threads.deferToThread(connect, listen)
        self.addCleanup(sock.close)
        yield threads.deferToThread(lambda: (sock.sendall(b"abc"), sock.recv(3)))
        [info] = rule.active_connections()
        self.assertEqual(info["peer"], "127.0.0.1:%d" % sock.getsockname()[1])
        self.assertEqual((info["target"], info["state"], info["splice"]), (f"127.0.0.1:{port}", "open", self.use_splice))
        self.assertEqual((info["bytes_in"], info["bytes_out"]), (3, 3))
        self.assertEqual(_metric("mailgw_publish_connections_active", rule=rule.name), 1)
        sock.close()
        yield until(reactor, lambda: not rule.active_connections())
        self.assertEqual(_metric("mailgw_publish_connections_active", rule=rule.name), 0)

    @inlineCallbacks
    def test_client_outside_set_denied(self) -> None:
        """A client bound to 127.0.0.2 is closed at once when only 127.0.0.1/32 may connect; the target sees nothing."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port, clients=ClientSet(["127.0.0.1/32"]))
        with capturedLogs() as events:
            denied = yield threads.deferToThread(lambda: refused(listen, source="127.0.0.2"))
        self.assertEqual(denied, b"")
        allowed = yield threads.deferToThread(lambda: (lambda s: (s.sendall(b"hi"), s.recv(2))[1])(connect(listen)))
        self.assertEqual(allowed, b"hi")
        self.assertEqual(len(target.connections), 1)  # only the allowed one
        [deny] = [e for e in events if e.get("event") == "forward_deny"]
        self.assertEqual((deny["rule"], deny["peer"].rsplit(":", 1)[0], deny["reason"]),
                         (rule.name, "127.0.0.2", "not_in_client_set"))
        self.assertIn(f"forward_deny rule={rule.name} peer=127.0.0.2:", deny["mailgw_line"])
        self.assertEqual(_metric("mailgw_publish_connections_total", rule=rule.name, result="denied"), 1)

    @inlineCallbacks
    def test_proxy_v1_ipv4_and_ipv6(self) -> None:
        """PROXY v1 reaches the target byte for byte before the client's data, for IPv4 and IPv6 clients."""
        target, port = start_target(reactor, self, Capture)
        _, listen4 = start_rule(reactor, self, port, proxy_protocol="v1")
        _, listen6 = start_rule(reactor, self, port, proxy_protocol="v1", interface="::1")
        for index, (host, listen) in enumerate((("127.0.0.1", listen4), ("::1", listen6))):
            def run() -> int:
                sock = connect(listen, host)
                cport = sock.getsockname()[1]
                sock.sendall(b"payload")
                sock.close()
                return cport
            cport = yield threads.deferToThread(run)
            received = yield target.ended_at(reactor, index)
            family = "TCP6" if host == "::1" else "TCP4"
            self.assertEqual(received, f"PROXY {family} {host} {host} {cport} {listen}\r\n".encode() + b"payload")

    @inlineCallbacks
    def test_proxy_v2_ipv4_and_ipv6(self) -> None:
        """PROXY v2 reaches the target byte for byte (signature, version/command, family, length, addresses)."""
        target, port = start_target(reactor, self, Capture)
        _, listen4 = start_rule(reactor, self, port, proxy_protocol="v2")
        _, listen6 = start_rule(reactor, self, port, proxy_protocol="v2", interface="::1")
        signature = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
        for index, (host, listen) in enumerate((("127.0.0.1", listen4), ("::1", listen6))):
            def run() -> int:
                sock = connect(listen, host)
                cport = sock.getsockname()[1]
                sock.sendall(b"payload")
                sock.close()
                return cport
            cport = yield threads.deferToThread(run)
            received = yield target.ended_at(reactor, index)
            if host == "::1":
                addresses = b"\x00" * 15 + b"\x01" + b"\x00" * 15 + b"\x01"
                expected = signature + b"\x21\x21\x00\x24" + addresses
            else:
                expected = signature + b"\x21\x11\x00\x0c" + b"\x7f\x00\x00\x01\x7f\x00\x00\x01"
            self.assertEqual(received, expected + struct.pack("!HH", cport, listen) + b"payload")

    @inlineCallbacks
    def test_flood_beyond_max_per_client(self) -> None:
        """Connections from one address beyond max_per_client are closed at accept; a freed slot is reusable."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port, max_per_client=3)
        held = []
        for _ in range(3):
            sock = yield threads.deferToThread(connect, listen)
            self.addCleanup(sock.close)
            yield threads.deferToThread(lambda s=sock: (s.sendall(b"x"), s.recv(1)))
            held.append(sock)
        floods = yield threads.deferToThread(lambda: [refused(listen) for _ in range(20)])
        self.assertEqual(floods, [b""] * 20)
        self.assertEqual(len(target.connections), 3)
        self.assertEqual(_metric("mailgw_publish_connections_total", rule=rule.name, result="denied"), 20)
        held[0].close()
        yield until(reactor, lambda: len(rule.active_connections()) == 2)
        again = yield threads.deferToThread(lambda: (lambda s: (s.sendall(b"y"), s.recv(1))[1])(connect(listen)))
        self.assertEqual(again, b"y")

    @inlineCallbacks
    def test_max_connections(self) -> None:
        """The rule-wide cap refuses connections from any address once reached."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port, max_connections=1)
        sock = yield threads.deferToThread(connect, listen)
        self.addCleanup(sock.close)
        yield threads.deferToThread(lambda: (sock.sendall(b"x"), sock.recv(1)))
        closed = yield threads.deferToThread(lambda: refused(listen, source="127.0.0.3"))
        self.assertEqual(closed, b"")
        self.assertEqual(len(target.connections), 1)

    @inlineCallbacks
    def test_connecting_clients_count_towards_limits(self) -> None:
        """Clients still waiting for a slow target hold their slots: max_connections refuses the next one."""
        blackhole = socket.socket()
        self.addCleanup(blackhole.close)
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        filler = socket.create_connection(blackhole.getsockname())
        self.addCleanup(filler.close)
        rule, listen = start_rule(reactor, self, blackhole.getsockname()[1], max_connections=2, connect_timeout=5.0)
        for _ in range(2):
            sock = yield threads.deferToThread(connect, listen)
            self.addCleanup(sock.close)
        yield until(reactor, lambda: len(rule.active_connections()) == 2)
        self.assertEqual([c["state"] for c in rule.active_connections()], ["connecting", "connecting"])
        self.assertEqual((yield threads.deferToThread(refused, listen)), b"")

    @inlineCallbacks
    def test_client_bytes_wait_for_the_target(self) -> None:
        """Bytes a client sends while the target is still connecting reach it intact once it answers."""
        slow = socket.socket()
        self.addCleanup(slow.close)
        slow.bind(("127.0.0.1", 0))
        slow.listen(0)
        filler = socket.create_connection(slow.getsockname())  # the queue is full: the gateway's SYN waits
        rule, listen = start_rule(reactor, self, slow.getsockname()[1], connect_timeout=10.0)
        sock = yield threads.deferToThread(connect, listen)
        self.addCleanup(sock.close)
        yield threads.deferToThread(sock.sendall, b"early bytes")
        yield until(reactor, lambda: [c["state"] for c in rule.active_connections()] == ["connecting"])

        def target() -> bytes:
            first, _ = slow.accept()  # frees the queue; the retransmitted SYN gets in
            first.close()
            filler.close()
            slow.settimeout(10)
            conn, _ = slow.accept()
            with conn:
                conn.settimeout(10)
                return conn.recv(100)
        self.assertEqual((yield threads.deferToThread(target)), b"early bytes")

    @inlineCallbacks
    def test_sessions_registry_kick(self) -> None:
        """Forwarded connections appear in the shared session registry under publish.NAME; kick() closes both sides."""
        from mailgw.net.sessions import SessionRegistry

        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port)
        rule.sessions = SessionRegistry()
        sock = yield threads.deferToThread(connect, listen)
        self.addCleanup(sock.close)
        yield threads.deferToThread(lambda: (sock.sendall(b"k"), sock.recv(1)))
        [session] = rule.sessions.sessions(f"publish.{rule.name}")
        self.assertEqual(session.peer, "127.0.0.1:%d" % sock.getsockname()[1])
        session.kick()
        self.assertEqual((yield threads.deferToThread(read_all, sock)), b"")
        self.assertEqual((yield target.ended_at(reactor, 0)), b"k")
        yield until(reactor, lambda: not rule.sessions.sessions())

    @inlineCallbacks
    def test_half_close_client_to_target(self) -> None:
        """A client that sends and shuts its write side still gets the target's reply (portforward loses it)."""
        target, port = start_target(reactor, self, ReplyAtEOF)
        _, listen = start_rule(reactor, self, port)

        def client() -> bytes:
            sock = connect(listen)
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            return read_all(sock)
        self.assertEqual((yield threads.deferToThread(client)), b"got:ping")

    @inlineCallbacks
    def test_half_close_target_to_client(self) -> None:
        """After the target's FIN the client sees EOF and can still send; the target receives it."""
        target, port = start_target(reactor, self, GreetThenFIN)
        _, listen = start_rule(reactor, self, port)

        def client() -> bytes:
            sock = connect(listen)
            greeting = read_all(sock)
            sock.sendall(b"still talking")
            sock.shutdown(socket.SHUT_WR)
            read_all(sock)
            return greeting
        self.assertEqual((yield threads.deferToThread(client)), b"hello, then FIN")
        self.assertEqual((yield target.ended_at(reactor, 0)), b"still talking")

    @inlineCallbacks
    def test_target_down_closes_client_within_a_second(self) -> None:
        """A refused target connection closes the client in under 1 s and is logged and counted."""
        rule, listen = start_rule(reactor, self, closed_port())

        def client() -> float:
            sock = connect(listen)
            start = time.monotonic()
            read_all(sock)
            return time.monotonic() - start
        with capturedLogs() as events:
            elapsed = yield threads.deferToThread(client)
        self.assertLess(elapsed, 1.0)
        [failed] = [e for e in events if e.get("event") == "forward_upstream_failed"]
        self.assertEqual((failed["rule"], failed["reason"]), (rule.name, "refused"))
        self.assertEqual(_metric("mailgw_publish_connections_total", rule=rule.name, result="target_failed"), 1)
        yield until(reactor, lambda: not rule.active_connections())

    @inlineCallbacks
    def test_target_connect_timeout(self) -> None:
        """A target that never answers the SYN (full accept queue) closes the client after connect_timeout."""
        blackhole = socket.socket()
        self.addCleanup(blackhole.close)
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        filler = socket.create_connection(blackhole.getsockname())  # fills the accept queue of length 1
        self.addCleanup(filler.close)
        rule, listen = start_rule(reactor, self, blackhole.getsockname()[1], connect_timeout=0.3)

        def client() -> float:
            sock = connect(listen)
            start = time.monotonic()
            read_all(sock)
            return time.monotonic() - start
        with capturedLogs() as events:
            elapsed = yield threads.deferToThread(client)
        self.assertTrue(0.2 < elapsed < 2.0, elapsed)
        [failed] = [e for e in events if e.get("event") == "forward_upstream_failed"]
        self.assertEqual(failed["reason"], "timeout")

    @inlineCallbacks
    def test_idle_timeout_closes_both_sides(self) -> None:
        """No byte either way for idle_timeout closes the client and the target connection."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port, idle_timeout=0.3)

        def client() -> tuple[bytes, float]:
            sock = connect(listen)
            sock.sendall(b"once")
            echoed = sock.recv(4)
            start = time.monotonic()
            read_all(sock)
            return echoed, time.monotonic() - start
        echoed, elapsed = yield threads.deferToThread(client)
        self.assertEqual(echoed, b"once")
        self.assertTrue(0.2 < elapsed < 2.0, elapsed)
        self.assertEqual((yield target.ended_at(reactor, 0)), b"once")
        yield until(reactor, lambda: not rule.active_connections())

    @inlineCallbacks
    def test_client_set_swapped_live(self) -> None:
        """set_clients applies to new connections and closes open ones the new set no longer allows."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port)
        sock = yield threads.deferToThread(connect, listen, "127.0.0.1", "127.0.0.2")
        self.addCleanup(sock.close)
        yield threads.deferToThread(lambda: (sock.sendall(b"x"), sock.recv(1)))
        self.assertEqual(rule.set_clients(ClientSet(["127.0.0.1/32"])), 1)
        self.assertEqual((yield threads.deferToThread(read_all, sock)), b"")
        denied = yield threads.deferToThread(lambda: refused(listen, source="127.0.0.2"))
        self.assertEqual(denied, b"")
        self.assertEqual(len(target.connections), 1)


    @inlineCallbacks
    def test_accept_and_revoke_logged(self) -> None:
        """An accepted forwarded connection logs forward_accept; one closed by a narrowed client set logs forward_revoked."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port, name="logged")
        with capturedLogs() as events:
            sock = yield threads.deferToThread(connect, listen, "127.0.0.1", "127.0.0.2")
            self.addCleanup(sock.close)
            yield threads.deferToThread(lambda: (sock.sendall(b"x"), sock.recv(1)))
            rule.set_clients(ClientSet(["127.0.0.1/32"]))
            yield threads.deferToThread(read_all, sock)
        lines = {e["event"]: e["mailgw_line"] for e in events if e.get("event", "").startswith("forward_")}
        peer = "127.0.0.2:%d" % sock.getsockname()[1]
        self.assertEqual(lines["forward_accept"], f"forward_accept rule=logged peer={peer} target=127.0.0.1:{port}")
        self.assertEqual(lines["forward_revoked"], f"forward_revoked rule=logged peer={peer} reason=not_in_client_set")

    @inlineCallbacks
    def test_client_reset_closes_target(self) -> None:
        """A client that resets mid-stream gets its target connection closed too, and leaves the rule."""
        target, port = start_target(reactor, self, Echo)
        rule, listen = start_rule(reactor, self, port)

        def client() -> None:
            sock = connect(listen)
            sock.sendall(b"abc")
            sock.recv(3)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        yield threads.deferToThread(client)
        self.assertEqual((yield target.ended_at(reactor, 0)), b"abc")
        yield until(reactor, lambda: not rule.active_connections())

    @inlineCallbacks
    def test_target_reset_while_client_slow(self) -> None:
        """A target that resets while the gateway holds data for a slow client still ends the client connection."""
        target, port = start_target(reactor, self, Capture)
        rule, listen = start_rule(reactor, self, port)
        sock = yield threads.deferToThread(connect, listen)
        self.addCleanup(sock.close)
        yield until(reactor, lambda: target.connections and target.connections[0].transport is not None)
        target.connections[0].transport.write(b"z" * (32 * 1024 * 1024))
        [client] = rule._active.values()
        yield until(reactor, lambda: getattr(client.transport, "producerPaused", False)
                    or (client.relay is not None and client.relay.outbound.pending))
        target.connections[0].transport.abortConnection()
        received = yield threads.deferToThread(read_all, sock)
        self.assertLessEqual(len(received), 32 * 1024 * 1024)
        yield until(reactor, lambda: not rule.active_connections())


class TwistedPathForwarderTests(ForwarderTests):
    """The same behaviour through Twisted producers and consumers (splice = false, or TLS transports)."""

    use_splice = False
