"""Publishing rules in the real `twistd mailgw` process: TLS through a rule, denial log, 1 GiB to a slow reader."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support.certs import make_server_cert
from tests.support.gateway import REPO, Gateway, environment

from .support import connect, read_all, refused

GIB = 1024 ** 3
CHUNK = 1024 * 1024


class ThreadServer:
    """A blocking loopback server running `handle(conn)` per connection in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None], count_carried: bool = False) -> None:
        self.handle, self.count_carried = handle, count_carried
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.carried = 0  # connections that sent a byte (the gateway's target checks connect and close)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.count_carried and conn.recv(1, socket.MSG_PEEK):
                    self.carried += 1
                self.handle(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def send_gib(conn: socket.socket) -> None:
    block = memoryview(bytes(range(256)) * (CHUNK // 256))
    for _ in range(GIB // CHUNK):
        conn.sendall(block)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class GatewayTests(SynchronousTestCase):
    """One twistd gateway with several rules, targets in this process or beside it."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.cert = make_server_cert(os.path.join(self.dir, "tls"), ["localhost", "127.0.0.1"])
        # The TLS target: an implicit-TLS server built from mailgw.net.tls in its own process.
        self.tls_target = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "support", "tls_server.py"),
                                            self.cert.cert_file, self.cert.key_file, "TLSv1.2"],
                                           stdout=subprocess.PIPE, text=True, env=environment())
        self.addCleanup(self.tls_target.wait)
        self.addCleanup(self.tls_target.kill)
        tls_port = int(self.tls_target.stdout.readline())
        self.echo = ThreadServer(echo, count_carried=True)
        self.bulk = ThreadServer(send_gib)
        for server in (self.echo, self.bulk):
            self.addCleanup(server.close)
        config = os.path.join(self.dir, "mailgw.toml")
        rule = '[publish.{0}]\nlisten = "tcp:0:interface=127.0.0.1"\ntarget = "127.0.0.1:{1}"\nclients = {2}\n{3}\n'
        with open(config, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{self.dir}/state"\n[auth]\nbackends = []\n'
                         + rule.format("imaps", tls_port, '["any"]', 'protocol = "imaps"')
                         + rule.format("raw", self.echo.port, '["127.0.0.1/32"]', "")
                         + rule.format("bulk", self.bulk.port, '["any"]', "")
                         + rule.format("bulk_nosplice", self.bulk.port, '["any"]', "splice = false"))
        self.gateway = Gateway(config, self.dir).start(expect=4)
        self.addCleanup(self.gateway.stop)

    def port(self, name: str) -> int:
        return self.gateway.port(f"publish.{name}.listen")

    def test_tls_through_rule_python_ssl(self) -> None:
        """A verifying Python TLS client reaches the TLS server through the imaps rule (the seed's IMAPS topology)."""
        import ssl
        context = ssl.create_default_context(cafile=self.cert.ca_file)
        with context.wrap_socket(connect(self.port("imaps")), server_hostname="localhost") as tls:
            self.assertEqual(tls.recv(100), b"* OK hello\r\n")
            tls.sendall(b"a1 NOOP\r\n")
            self.assertEqual(tls.recv(100), b"a1 NOOP\r\n")
            self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))

    def test_tls_through_rule_openssl_s_client(self) -> None:
        """openssl s_client verifies the internal server's certificate through the rule and gets its greeting."""
        result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port('imaps')}",
                                 "-CAfile", self.cert.ca_file, "-verify_return_error", "-servername", "localhost",
                                 "-verify_hostname", "localhost", "-quiet"],
                                input="a1 NOOP\r\n", capture_output=True, text=True, timeout=20)
        self.assertIn("* OK hello", result.stdout)
        self.assertIn("a1 NOOP", result.stdout)

    def test_raw_echo_and_denial_logged(self) -> None:
        """Raw bytes echo through a rule; a client from 127.0.0.2 is closed, logged with rule and peer, not forwarded."""
        with connect(self.port("raw")) as sock:
            sock.sendall(b"\x00\xffraw\r\n")
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(read_all(sock), b"\x00\xffraw\r\n")
        self.assertEqual(refused(self.port("raw"), source="127.0.0.2"), b"")
        line = self.gateway.wait_for("forward_deny rule=raw peer=127.0.0.2:")
        self.assertIn("reason=not_in_client_set", line)
        self.assertEqual(self.echo.carried, 1)

    def _gib_to_slow_reader(self, rule: str) -> tuple[int, int, float]:
        pid = self.gateway.process.pid
        with connect(self.port("raw")) as warm:  # first connection: imports and buffers allocated
            warm.sendall(b"x")
            warm.recv(1)
        baseline, peak, done = rss(pid), 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.02):
                peak = max(peak, rss(pid))
        sampler = threading.Thread(target=sample)
        sampler.start()
        received, start = 0, time.monotonic()
        rate = 200 * 1024 * 1024  # bytes/s: slower than the sender, so the gateway must hold back
        try:
            with connect(self.port(rule), timeout=30) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
                buf = bytearray(65536)
                while True:
                    n = sock.recv_into(buf)
                    if not n:
                        break
                    received += n
                    ahead = received / rate - (time.monotonic() - start)
                    if ahead > 0.005:
                        time.sleep(ahead)
        finally:
            done.set()
            sampler.join()
        return received, peak - baseline, time.monotonic() - start

    @pytest.mark.slow
    def test_gib_to_slow_reader_splice(self) -> None:
        """1 GiB from a fast target to a slower reader keeps the gateway's RSS within 20 MB (splice path)."""
        received, growth, _ = self._gib_to_slow_reader("bulk")
        self.assertEqual(received, GIB)
        self.assertLess(growth, 20 * 1024 * 1024)

    @pytest.mark.slow
    def test_gib_to_slow_reader_producers(self) -> None:
        """1 GiB to a slower reader keeps RSS within 20 MB through Twisted producers/consumers (splice = false)."""
        received, growth, _ = self._gib_to_slow_reader("bulk_nosplice")
        self.assertEqual(received, GIB)
        self.assertLess(growth, 20 * 1024 * 1024)
