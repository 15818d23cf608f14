"""kill -9 during bursts of submissions, 50 rounds: every message that got a 250 is delivered exactly once."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.smtp.smtp_support import SinkBehaviour, SinkFactory, tmpdir

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "crash_server.py")
ROUNDS = 50


def start(state: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, SERVER, "serve", state], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("PORT "), line
    return proc, int(line.split()[1])


def submit_loop(port: int, worker: int, stop: threading.Event, acked: set[str], tried: set[str]) -> None:
    """Submit messages back to back on one connection until the server dies."""
    import base64
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
        f = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = f.readline()
                if not line:
                    raise EOFError
                if line[3:4] != b"-":
                    return line

        reply()
        sock.sendall(b"EHLO w\r\n")
        reply()
        sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw") + b"\r\n")
        assert reply().startswith(b"235")
        n = 0
        while not stop.is_set():
            n += 1
            token = f"w{worker}-{time.monotonic_ns()}-{n}"
            tried.add(token)
            body = (f"From: alice@example.test\r\nSubject: {token}\r\n\r\n" + f"{token}\r\n" * 50).encode()
            sock.sendall(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<far@remote.example>\r\nDATA\r\n")
            for _ in range(3):
                if not reply().startswith((b"250", b"354")):
                    return
            sock.sendall(body + b".\r\n")
            if reply().startswith(b"250"):
                acked.add(token)
    except (OSError, EOFError, ssl.SSLError, AssertionError):
        return


class CrashLoopTests(TestCase):
    timeout = 180

    async def test_kill9_loop(self) -> None:
        """50 rounds of SIGKILL during a burst; after recovery each acknowledged message reaches the sink once."""
        state = tmpdir(self)
        acked: set[str] = set()
        tried: set[str] = set()
        rng = random.Random(5321)

        def rounds() -> None:
            for _ in range(ROUNDS):
                proc, port = start(state)
                stop = threading.Event()
                workers = [threading.Thread(target=submit_loop, args=(port, w, stop, acked, tried)) for w in range(2)]
                for w in workers:
                    w.start()
                time.sleep(rng.uniform(0.03, 0.25))  # kill at an arbitrary point of the burst
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                stop.set()
                for w in workers:
                    w.join(10)
                if proc.stdout:
                    proc.stdout.close()

        t0 = time.monotonic()
        await deferToThread(rounds)
        t1 = time.monotonic()
        self.assertGreater(len(acked), ROUNDS)
        sink = SinkFactory(SinkBehaviour(starttls=False))
        port = reactor.listenTCP(0, sink, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        relay = await deferToThread(subprocess.run, [sys.executable, SERVER, "relay", state, str(port.getHost().port)],
                                    capture_output=True, text=True, timeout=120)
        self.assertIn("DONE", relay.stdout, relay.stderr[-3000:])
        print(f"crash loop: {len(acked)} acknowledged of {len(tried)} tried; rounds {t1 - t0:.1f}s, "
              f"relay {time.monotonic() - t1:.1f}s")
        await deferLater(reactor, 0, lambda: None)
        seen: dict[str, int] = {}
        for m in sink.messages:
            subject = [ln for ln in m.body.split(b"\r\n") if ln.startswith(b"Subject: ")][0][9:].decode()
            seen[subject] = seen.get(subject, 0) + 1
            expected = (f"From: alice@example.test\r\nSubject: {subject}\r\n\r\n" + f"{subject}\r\n" * 50).encode()
            self.assertTrue(m.body.endswith(expected), "partial or corrupted message")
        lost = acked - set(seen)
        duplicated = {t for t, n in seen.items() if n > 1}
        self.assertEqual(lost, set())
        self.assertEqual(duplicated, set())
        self.assertTrue(set(seen) <= tried)
