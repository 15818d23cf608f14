"""Admin-surface costs, as ratios against a reference measured in the same run.

- /metrics scrape with 1,000 registered sessions vs GET / (a static reply) on the same Site;
- /health with every listener bound vs GET /;
- a SIGHUP-style reload (certificate re-read, unchanged config) in milliseconds, and handshakes
  served during 20 reloads (none may fail).

Run: python bench/ops_bench.py
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from mailgw import assemble  # noqa: E402
from mailgw.config import load_config  # noqa: E402
from tests.support.certs import make_ca, make_server_cert  # noqa: E402


class Session:
    def __init__(self, i: int) -> None:
        self.peer, self.user = f"127.0.0.{i % 250 + 1}:{40000 + i}", f"user{i}"

    def kick(self) -> None:
        pass


def fetch(port: int, path: str, count: int) -> float:
    """Seconds per request over keep-alive HTTP/1.1, measured in a client thread."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        reader = conn.makefile("rb")
        start = time.perf_counter()
        for _ in range(count):
            conn.sendall(request)
            length = 0
            while True:
                line = reader.readline()
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b""):
                    break
            reader.read(length)
        return (time.perf_counter() - start) / count


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def handshakes(port: int, ca: str, seconds: float) -> tuple[int, int]:
    context = ssl.create_default_context(cafile=ca)
    ok = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") as c:
                c.sendall(b"x")
                c.recv(1)
            ok += 1
        except OSError:
            failed += 1
    return ok, failed


@defer.inlineCallbacks
def main(_reactor):
    directory = tempfile.mkdtemp()
    try:
        ca = make_ca(directory)
        cert = make_server_cert(directory, ["localhost"], ca=ca)
        path = os.path.join(directory, "mailgw.toml")
        with open(path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{directory}/state"\n'
                         f'[tls.t]\ncert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"\n'
                         '[admin]\nhttp = { listen = "tcp:0:interface=127.0.0.1" }\n')
        root = assemble.build(load_config(path), reactor, source=lambda: load_config(path), environ={})
        root.privilegedStartService()
        root.startService()
        gateway = root.gateway
        for i in range(1000):
            gateway.sessions.add(f"l{i % 4}", "imap", Session(i))
        http_port = root.listeners[0].port.getHost().port
        tls_port = gateway.listen("tcp:0:interface=127.0.0.1", Factory.forProtocol(Echo), gateway.tls.get("t"), "b").port.getHost().port
        n = 300
        base = yield deferToThread(fetch, http_port, "/", n)
        scrape = yield deferToThread(fetch, http_port, "/metrics", n)
        health = yield deferToThread(fetch, http_port, "/health", n)
        print(f"GET /        {base * 1e3:7.3f} ms (reference)")
        print(f"GET /metrics {scrape * 1e3:7.3f} ms  ratio {scrape / base:5.1f}x  (1,000 sessions, 4 listeners)")
        print(f"GET /health  {health * 1e3:7.3f} ms  ratio {health / base:5.1f}x")
        durations = []
        counting = deferToThread(handshakes, tls_port, ca[2], 3.0)
        for _ in range(20):
            start = time.perf_counter()
            result = yield assemble.reload_from_source(gateway)
            durations.append(time.perf_counter() - start)
            assert result == "ok", result
            yield task.deferLater(reactor, 0.1, lambda: None)
        ok, failed = yield counting
        durations.sort()
        print(f"reload (1 certificate)  median {durations[10] * 1e3:6.2f} ms  max {durations[-1] * 1e3:6.2f} ms")
        print(f"TLS handshakes during 20 reloads: {ok} ok, {failed} failed")
        yield root.stopService()
    finally:
        shutil.rmtree(directory, True)


if __name__ == "__main__":
    task.react(main)
