"""STARTTLS injection (CVE-2011-0411 class) and no credential before TLS, on real loopback sockets."""

from __future__ import annotations

import socket
import ssl
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.imap.imap_live import PASSWORD, LiveServer, certificate


def _read_until(sock: Any, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _ctx() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificate()[0])


class StartTLSInjectionTests(unittest.TestCase):
    """Plaintext pipelined behind STARTTLS is never answered, inside TLS or out."""

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)

    def test_injected_login_is_dropped(self) -> None:
        """`a STARTTLS` + injected LOGIN/CAPABILITY in one segment: only `a` is answered; the session is not logged in."""
        port = self.server.plain_port

        def run() -> tuple[bytes, bytes]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            _read_until(raw, b"\r\n")
            raw.sendall(b"a STARTTLS\r\nb LOGIN alice " + PASSWORD.encode() + b"\r\nc CAPABILITY\r\n")
            before = _read_until(raw, b"a OK")
            tls = _ctx().wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"d SELECT INBOX\r\ne NOOP\r\n")
            after = _read_until(tls, b"e OK")
            tls.close()
            return before, after

        def check(res: tuple[bytes, bytes]) -> None:
            before, after = res
            self.assertEqual(before, b"a OK Begin TLS negotiation now.\r\n")
            self.assertNotIn(b"b ", after)
            self.assertNotIn(b"c ", after)
            self.assertEqual(after, b"d BAD Not authenticated.\r\ne OK NOOP completed.\r\n")

        return deferToThread(run).addCallback(check)

    def test_one_byte_writes_and_recomputed_capabilities(self) -> None:
        """STARTTLS sent one byte at a time still works; inside TLS the capabilities drop STARTTLS/LOGINDISABLED."""
        port = self.server.plain_port

        def run() -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            _read_until(raw, b"\r\n")
            for b in b"a STARTTLS\r\n":
                raw.sendall(bytes([b]))
            _read_until(raw, b"a OK")
            tls = _ctx().wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"b CAPABILITY\r\n")
            out = _read_until(tls, b"b OK")
            tls.sendall(b"c LOGIN alice " + PASSWORD.encode() + b"\r\n")
            out += _read_until(tls, b"c OK")
            tls.close()
            return out

        def check(out: bytes) -> None:
            self.assertIn(b"AUTH=PLAIN", out)
            self.assertNotIn(b"STARTTLS", out.split(b"\r\n")[0])
            self.assertNotIn(b"LOGINDISABLED", out)
            self.assertIn(b"c OK [CAPABILITY", out)

        return deferToThread(run).addCallback(check)

    def test_client_hello_in_same_segment(self) -> None:
        """A ClientHello sent right behind the STARTTLS line (same segment) is handed to TLS and works."""
        port = self.server.plain_port

        def run() -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            _read_until(raw, b"\r\n")
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = _ctx().wrap_bio(incoming, outgoing, server_hostname="localhost")
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            raw.sendall(b"a STARTTLS\r\n" + outgoing.read())
            reply = _read_until(raw, b"a OK")
            rest = reply.split(b"\r\n", 1)[1]
            incoming.write(rest)
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    data = outgoing.read()
                    if data:
                        raw.sendall(data)
                    incoming.write(raw.recv(65536))
            raw.sendall(outgoing.read())
            obj.write(b"b NOOP\r\n")
            raw.sendall(outgoing.read())
            out = b""
            while b"b OK" not in out:
                incoming.write(raw.recv(65536))
                try:
                    out += obj.read()
                except ssl.SSLWantReadError:
                    continue
            raw.close()
            return out

        return deferToThread(run).addCallback(lambda out: self.assertEqual(out, b"b OK NOOP completed.\r\n"))


class NoAuthBeforeTLSTests(unittest.TestCase):
    """On a require_tls server nothing reaches the credential checker before TLS."""

    def test_checker_never_asked(self) -> None:
        """LOGIN and AUTHENTICATE PLAIN in clear are refused with PRIVACYREQUIRED and the directory sees nothing."""
        server = LiveServer(_reactor)
        self.addCleanup(server.stop)
        asked: list[str] = []
        original = server.directory.check_password
        server.directory.check_password = lambda login, pw: (asked.append(login), original(login, pw))[1]  # type: ignore
        port = server.plain_port

        def run() -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            greeting = _read_until(raw, b"\r\n")
            raw.sendall(b"a LOGIN alice " + PASSWORD.encode() + b"\r\nb AUTHENTICATE PLAIN AGFsaWNlAHg=\r\n")
            out = _read_until(raw, b"b NO")
            raw.close()
            return greeting + out

        def check(out: bytes) -> None:
            self.assertIn(b"LOGINDISABLED", out)
            self.assertNotIn(b"AUTH=", out)
            self.assertIn(b"a NO [PRIVACYREQUIRED]", out)
            self.assertIn(b"b NO [PRIVACYREQUIRED]", out)
            self.assertEqual(asked, [])

        return deferToThread(run).addCallback(check)


class HandshakeMetricTests(unittest.TestCase):
    """TLS handshakes are counted per listener, result and version."""

    def test_ok_and_failed(self) -> None:
        """An IMAPS login counts result=ok with the TLS version; a plaintext client on 993 counts result=failed."""
        from mailgw.observe.metrics import REGISTRY
        server = LiveServer(_reactor)
        self.addCleanup(server.stop)
        port = server.tls_port

        def total(result: str) -> float:
            return sum(s.value for metric in REGISTRY.collect() if metric.name == "mailgw_tls_handshakes"
                       for s in metric.samples if s.name.endswith("_total") and s.labels.get("listener") == "live"
                       and s.labels.get("result") == result)

        before_ok, before_failed = total("ok"), total("failed")

        def run() -> None:
            tls = _ctx().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                     server_hostname="localhost")
            _read_until(tls, b"\r\n")
            tls.close()
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            raw.sendall(b"a LOGIN alice x\r\n")
            raw.recv(100)
            raw.close()

        async def settled(_: Any) -> None:
            # the server sees the second client's close a moment after the client's recv returns
            from twisted.internet.task import deferLater
            for _ in range(200):
                if total("failed") > before_failed:
                    break
                await deferLater(_reactor, 0.02, lambda: None)
            self.assertEqual(total("ok"), before_ok + 1)
            self.assertEqual(total("failed"), before_failed + 1)

        from twisted.internet.defer import Deferred
        return deferToThread(run).addCallback(lambda r: Deferred.fromCoroutine(settled(r)))
