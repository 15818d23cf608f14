"""RFC 3501 conformance of issue 18 (new keywords in FLAGS, NIL refused, address SEARCH) through imaplib over TLS."""

from __future__ import annotations

import imaplib
import ssl
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.imap.imap_live import PASSWORD, LiveServer, certificate
from tests.imap.test_imap_selected_commands import ADDRESS_MESSAGES


def _client(port: int) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=certificate()[0]))
    c.login("alice", PASSWORD)
    return c


class ConformanceLiveTests(unittest.TestCase):
    """What imaplib sees of the fixed conformance defects on a real IMAPS listener."""

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)

    def test_new_keyword_reaches_both_sessions_flags(self) -> Any:
        """After STORE +FLAGS ($keyword1), the acting and the other session both get FLAGS/PERMANENTFLAGS with it."""
        port = self.server.tls_port

        def run() -> dict[str, Any]:
            a, b = _client(port), _client(port)
            a.append("INBOX", None, None, ADDRESS_MESSAGES[0])
            a.select("INBOX")
            b.select("INBOX")
            for c in (a, b):
                c.response("FLAGS")  # drop SELECT's
                c.response("PERMANENTFLAGS")
            out = {"store": a.store("1", "+FLAGS", "($keyword1)"), "a_flags": a.response("FLAGS"),
                   "a_permanent": a.response("PERMANENTFLAGS")}
            b.noop()
            out["b_flags"] = b.response("FLAGS")
            try:
                a.store("1", "+FLAGS", "(NIL)")
                out["nil"] = "accepted"
            except imaplib.IMAP4.error as e:
                out["nil"] = str(e)
            out["after"] = a.fetch("1", "FLAGS")
            a.logout()
            b.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["store"], ("OK", [b"1 (FLAGS (\\Recent $keyword1))"]))
            listed = b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft $keyword1)"
            self.assertEqual(out["a_flags"], ("FLAGS", [listed]))
            self.assertEqual(out["a_permanent"],
                             ("PERMANENTFLAGS", [b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft $keyword1 \\*)"]))
            self.assertEqual(out["b_flags"], ("FLAGS", [listed]))
            self.assertIn("Invalid flag NIL", out["nil"])
            self.assertEqual(out["after"], ("OK", [b"1 (FLAGS (\\Recent $keyword1))"]))

        return deferToThread(run).addCallback(check)

    def test_search_from_matches_commented_address(self) -> Any:
        """SEARCH FROM user-from@domain.org finds `<user-from (comment)@ (comment) domain.org>` too."""
        port = self.server.tls_port

        def run() -> Any:
            c = _client(port)
            for m in ADDRESS_MESSAGES:
                c.append("INBOX", None, None, m)
            c.select("INBOX")
            out = (c.search(None, "FROM", "user-from@domain.org"), c.search(None, "FROM", "ealfro"))
            c.logout()
            return out

        return deferToThread(run).addCallback(
            lambda out: self.assertEqual(out, (("OK", [b"1 2 3 4"]), ("OK", [b"2 4"]))))
