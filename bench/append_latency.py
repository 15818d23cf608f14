"""APPEND latency with imaplib: literal and closing CRLF in two writes (stock imaplib) versus one write.

Starts bench/imap_bench_server.py (mailgw over a scratch Maildir) and, with --dovecot, Dovecot on the
same kind of Maildir; prints the mean milliseconds per APPEND of a 10 KB message for both write patterns.
Usage: PYTHONPATH=. python3 bench/append_latency.py [--count 200] [--dovecot]
"""

from __future__ import annotations

import argparse
import imaplib
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from imap_bench import PASSWORD, Dovecot, Mailgw, Server, certificate, ctx  # noqa: E402

MESSAGE = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: append\r\n\r\n" + b"z" * 78 * 128


class OneWrite(imaplib.IMAP4_SSL):
    """imaplib that sends the literal and its closing CRLF in one write (as most mail clients do)."""

    held = b""

    def send(self, data: bytes) -> None:
        if data is MESSAGE or (self.held == b"" and len(data) > 1000):
            self.held = data
            return
        if self.held:
            data, self.held = self.held + data, b""
        super().send(data)


def run(server: Server, count: int, one_write: bool) -> float:
    cls = OneWrite if one_write else imaplib.IMAP4_SSL
    c = cls("127.0.0.1", server.tls_port, ssl_context=ctx())
    c.login("alice", PASSWORD)
    c.append("INBOX", None, None, MESSAGE)  # warm up (first-use setup, index load)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        typ, _ = c.append("INBOX", None, None, MESSAGE)
        times.append(time.perf_counter() - t0)
        assert typ == "OK", (server.name, typ, _)
    c.logout()
    return statistics.mean(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--dovecot", action="store_true")
    args = ap.parse_args()
    os.environ["MAILGW_IMAP_TEST_CERT"] = ":".join(certificate())  # the server process uses the same one
    with tempfile.TemporaryDirectory(prefix="mailgw-append-bench-") as tmp:
        os.chmod(tmp, 0o755)  # Dovecot runs as nobody
        servers: list[Server] = [Mailgw(os.path.join(tmp, "mailgw"))]
        if args.dovecot:
            maildir = os.path.join(tmp, "dovecot", "Maildir")
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(maildir, sub))
            servers.append(Dovecot(os.path.join(tmp, "dovecot"), maildir))
        try:
            for server in servers:
                two = run(server, args.count, False)
                one = run(server, args.count, True)
                print(f"{server.name:8s} APPEND 10 KB x{args.count}: two writes {two:6.1f} ms, one write {one:6.1f} ms")
        finally:
            for server in servers:
                server.stop()
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
