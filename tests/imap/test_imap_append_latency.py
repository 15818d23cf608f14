"""APPEND from imaplib (literal and closing CRLF in two writes) is not held up by delayed ACK (issue 13, defect 4)."""

from __future__ import annotations

import imaplib
import ssl
import statistics
import time

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.imap.imap_live import PASSWORD, LiveServer, certificate

MESSAGE = b"From: a@example.test\r\nSubject: append\r\n\r\n" + b"z" * 78 * 128


class AppendLatencyTests(unittest.TestCase):
    """Stock imaplib writes `{n}` literal data and its CRLF separately; the server ACKs at once."""

    def setUp(self) -> None:
        self.server = LiveServer(reactor)
        self.addCleanup(self.server.stop)

    async def test_two_write_append_is_fast(self) -> None:
        """The median of 15 imaplib APPENDs of 10 KB stays well under the 40 ms delayed-ACK floor."""
        def run() -> list[float]:
            c = imaplib.IMAP4_SSL("127.0.0.1", self.server.tls_port,
                                  ssl_context=ssl.create_default_context(cafile=certificate()[0]))
            c.login("alice", PASSWORD)
            c.append("INBOX", None, None, MESSAGE)
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                typ, _ = c.append("INBOX", None, None, MESSAGE)
                times.append(time.perf_counter() - t0)
                assert typ == "OK"
            c.logout()
            return times

        times = await deferToThread(run)
        self.assertLess(statistics.median(times), 0.030, [round(t * 1000, 1) for t in times])
