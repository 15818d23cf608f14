"""Property test: any byte stream into a session yields only well-formed replies and never an exception."""

from __future__ import annotations

import base64
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService
from mailgw.smtp.factory import SubmissionFactory
from mailgw.smtp.policy import SubmissionPolicy
from mailgw.store.memory import MemoryStore

REPLY = re.compile(rb"^[2-5]\d\d[ -]")
PLAIN = base64.b64encode(b"\0alice\0pw")

WORDS = [b"EHLO x.example", b"HELO x", b"AUTH PLAIN " + PLAIN, b"AUTH PLAIN", PLAIN, b"AUTH LOGIN", b"YWxpY2U=",
         b"cHc=", b"*", b"=", b"AUTH NTLM", b"MAIL FROM:<alice@example.test>", b"MAIL FROM:<>",
         b"MAIL FROM:<alice@example.test> SIZE=99999999999", b"RCPT TO:<bob@example.test>",
         b"RCPT TO:<x@remote.example>", b"RCPT TO:<a%b@example.test>", b"DATA", b"RSET", b"NOOP", b"VRFY x",
         b"QUIT", b"STARTTLS", b"BDAT 10", b"\xff\xfe", b"", b"X" * 3000, b"AUTH PLAIN !!"]


class _NoSpool:
    """A queue whose disk is always full: DATA answers 451 (the fault a fuzz run cannot cause itself)."""

    def open_spool_async(self) -> "defer.Deferred[Any]":
        return defer.fail(OSError(28, "No space left on device"))


def run_session(chunks: list[bytes], tls: bool) -> bytes:
    """Everything a session answers to `chunks` (STARTTLS skipped without TLS: no handshake on a StringTransport)."""
    clock = Clock()
    directory = MemoryDirectory()
    directory.add_user("alice", "pw", ["alice@example.test"])
    directory.add_user("bob", "pw", ["bob@example.test"])
    auth = AuthService([directory], clock, failure_delay=0)
    factory = SubmissionFactory("fuzz", auth, MemoryStore(), _NoSpool(), None, "mx.example.test",  # type: ignore[arg-type]
                                SubmissionPolicy(local_domains=frozenset({"example.test"})), clock, None)  # type: ignore[arg-type]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.tls = tls  # pretend TLS is up, so AUTH and MAIL are reachable (STARTTLS is then refused)
    for chunk in chunks:
        if b"STARTTLS" in chunk and not tls:
            continue  # a real handshake is not possible on a StringTransport
        proto.dataReceived(chunk)
        clock.advance(0)
    clock.advance(1)
    return transport.value()


LINES = st.lists(st.one_of(st.sampled_from(WORDS).map(lambda w: w + b"\r\n"), st.binary(max_size=40)), max_size=25)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(LINES, st.booleans())
    def test_any_input(self, chunks: list[bytes], tls: bool) -> None:
        """Replies are always `NNN ` / `NNN-` lines and the session never raises."""
        out = run_session(chunks, tls)
        self.assertEqual(self.flushLoggedErrors(), [])
        for line in out.split(b"\r\n")[:-1]:
            self.assertRegex(line, REPLY)

    @settings(max_examples=150, deadline=None)
    @given(LINES, st.lists(st.integers(min_value=0), max_size=10), st.booleans())
    def test_any_chunking(self, chunks: list[bytes], cuts: list[int], tls: bool) -> None:
        """The transcript does not depend on how the bytes were segmented, and it stays proportional to the input."""
        data = b"".join(c for c in chunks if tls or b"STARTTLS" not in c)
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        whole = run_session([data], tls)
        self.assertEqual(run_session([data[a:b] for a, b in zip(points, points[1:])], tls), whole)
        self.assertEqual(self.flushLoggedErrors(), [])
        # at most one reply per line (EHLO's is the longest), plus the greeting and a final 421
        self.assertLessEqual(len(whole), 400 * (data.count(b"\n") + 2))
