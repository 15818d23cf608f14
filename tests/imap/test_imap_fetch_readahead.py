"""FETCH read-ahead for clients that pipeline one FETCH per message (mbsync): fewer store jobs, same bytes."""

from __future__ import annotations

from twisted.trial import unittest

from tests.imap.imap_testing import Harness


def numbered(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: n%d\r\n\r\nbody of message %d\r\n" % (n, n)


class ReadAheadTests(unittest.SynchronousTestCase):
    """The session opens the next messages with the one asked for while more commands wait."""

    def setUp(self) -> None:
        self.h = Harness()
        for n in range(1, 41):
            self.h.account().append("INBOX", numbered(n))
        self.c = self.h.connect()
        self.c.select()
        backend = self.h.account().folder("INBOX")
        self.jobs: list[list[int]] = []
        original = backend.open_bodies
        backend.open_bodies = lambda uids: (self.jobs.append(list(uids)), original(uids))[1]  # type: ignore[method-assign]

    def test_pipelined_single_fetches(self) -> None:
        """40 pipelined UID FETCH n (BODY.PEEK[]) answer byte for byte with a handful of store jobs, not 40."""
        out = self.c.send(b"".join(b"f%d UID FETCH %d (BODY.PEEK[])\r\n" % (n, n) for n in range(1, 41)))
        for n in range(1, 41):
            body = numbered(n)
            self.assertIn(b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\nf%d OK Fetch completed.\r\n"
                          % (n, n, len(body), body, n), out)
        self.assertLessEqual(len(self.jobs), 4, self.jobs)
        self.assertEqual(sorted(u for job in self.jobs for u in job), list(range(1, 41)))  # each opened once

    def test_no_read_ahead_without_a_pipeline(self) -> None:
        """A lone FETCH opens only the message asked for."""
        self.c.send(b"a UID FETCH 3 (BODY.PEEK[])\r\n")
        self.assertEqual(self.jobs, [[3]])
