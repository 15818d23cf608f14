"""Submission server transcripts over real TLS on 127.0.0.1: TLS and AUTH gates, policy, limits, delivery."""

from __future__ import annotations

import base64
import smtplib
import ssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailgw.observe.metrics import REGISTRY
from tests.smtp.smtp_support import RawSMTP, SubmissionHarness

PW = SubmissionHarness.PASSWORD
MSG = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def plain(user: str = "alice", pw: str = PW) -> str:
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


class SubmissionTests(TestCase):
    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    def raw(self, implicit: bool = False) -> RawSMTP:
        return RawSMTP(self.h.implicit if implicit else self.h.plain, implicit=implicit)

    def ctx(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.h.certs["ca"])

    async def test_starttls_auth_local_delivery(self) -> None:
        """smtplib STARTTLS + AUTH PLAIN delivers to a local user's INBOX with a Received header."""
        def run() -> Any:
            with smtplib.SMTP("127.0.0.1", self.h.plain, timeout=10) as s:
                s.starttls(context=self.ctx())
                s.login("alice", PW)
                return s.sendmail("alice@example.test", ["bob@example.test"], MSG)
        await deferToThread(run)
        inbox = self.h.inbox("bob")
        self.assertEqual(len(inbox), 1)
        self.assertTrue(inbox[0].endswith(MSG))
        received = inbox[0][: -len(MSG)].decode()
        self.assertIn("by mx.example.test (mailgw) with ESMTPSA", received)
        self.assertIn("(authenticated user alice)", received)
        self.assertRegex(received, r"using TLSv1\.[23] with cipher \S+")
        self.assertEqual(self.h.queue.entries(), [])

    async def test_ehlo_advertisement(self) -> None:
        """EHLO offers STARTTLS and no AUTH before TLS, AUTH and no STARTTLS after it."""
        def run() -> tuple[str, str]:
            c = self.raw()
            before = c.cmd("EHLO c.example")[1]
            c.starttls()
            after = c.cmd("EHLO c.example")[1]
            return before, after
        before, after = await deferToThread(run)
        self.assertIn("250-STARTTLS", before)
        self.assertNotIn("AUTH", before)
        for ext in ("PIPELINING", "SIZE 36700160", "8BITMIME", "ENHANCEDSTATUSCODES"):
            self.assertIn(ext, before)
            self.assertIn(ext, after)
        self.assertIn("AUTH PLAIN LOGIN NTLM", after)
        self.assertNotIn("STARTTLS", after)

    async def test_gates(self) -> None:
        """AUTH before TLS and MAIL before AUTH get 530; the checker is not reached; the connection stays."""
        def run() -> list[tuple[int, str]]:
            c = self.raw()
            out = [c.cmd("EHLO c.example"), c.cmd("AUTH PLAIN " + plain()), c.cmd("MAIL FROM:<alice@example.test>")]
            c.starttls()
            out.append(c.cmd("MAIL FROM:<alice@example.test>"))
            out.append(c.cmd("EHLO c.example"))
            out.append(c.cmd("MAIL FROM:<alice@example.test>"))
            out.append(c.cmd("RCPT TO:<someone@remote.example>"))
            out.append(c.cmd("NOOP"))
            return out
        before = REGISTRY.get_sample_value("mailgw_smtp_rejects_total", {"listener": "submission.relay", "code": "530"}) or 0
        r = await deferToThread(run)
        after = REGISTRY.get_sample_value("mailgw_smtp_rejects_total", {"listener": "submission.relay", "code": "530"})
        self.assertEqual(after, before + 3)
        self.assertEqual(r[1], (530, "530 5.7.0 Must issue a STARTTLS command first"))
        self.assertEqual(r[2], (530, "530 5.7.0 Must issue a STARTTLS command first"))
        self.assertEqual(r[3][0], 503)
        self.assertEqual(r[5], (530, "530 5.7.0 Authentication required"))
        self.assertEqual(r[6][0], 503)
        self.assertEqual(r[7][0], 250)
        self.assertEqual(self.h.queue.entries(), [])

    async def test_implicit_tls_login(self) -> None:
        """Implicit TLS (465) with AUTH LOGIN queues a remote message."""
        def run() -> Any:
            with smtplib.SMTP_SSL("127.0.0.1", self.h.implicit, timeout=10, context=self.nohost()) as s:
                s.ehlo()
                self.assertNotIn("starttls", s.esmtp_features)
                s.user, s.password = "alice", PW
                code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
                self.assertEqual(code, 235)
                return s.sendmail("a.l@example.test", ["x@remote.example", "y@remote.example"], MSG)
        await deferToThread(run)
        entries = self.h.queue.entries()
        self.assertEqual(len(entries), 1)
        self.assertEqual(entries[0]["recipients"], ["x@remote.example", "y@remote.example"])
        self.assertEqual(entries[0]["sender"], "a.l@example.test")

    def nohost(self) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=self.h.certs["ca"])
        c.check_hostname = False
        return c

    async def test_send_as(self) -> None:
        """MAIL FROM or a From: header not owned by the user is refused with 553 5.7.1; nothing queued."""
        def run() -> list[Any]:
            c = self.raw(implicit=True)
            c.cmd("EHLO c.example")
            c.login()
            out = [c.cmd("MAIL FROM:<bob@example.test>"), c.cmd("MAIL FROM:<alice@example.test.evil>"),
                   c.cmd("MAIL FROM:<>"), c.cmd("MAIL FROM:<ALICE@Example.TEST>"), c.cmd("RCPT TO:<x@remote.example>"),
                   c.cmd("DATA")]
            c.send(b"From: Bob <bob@example.test>\r\n\r\nspoof\r\n.\r\n")
            out.append(c.reply())
            out.append(c.cmd("NOOP"))
            return out
        r = await deferToThread(run)
        self.assertEqual(r[0], (553, "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice"))
        self.assertEqual(r[1][0], 553)
        self.assertEqual(r[2][0], 553)
        self.assertEqual([x[0] for x in r[3:6]], [250, 250, 354])
        self.assertEqual(r[6], (553, "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice"))
        self.assertEqual(r[7][0], 250)
        self.assertEqual(self.h.queue.entries(), [])

    async def test_unknown_local_user_and_limits(self) -> None:
        """Unknown local users get 550 5.1.1 at RCPT; SIZE over the limit 552 5.3.4; extra recipients 452."""
        self.h.set_policy(max_recipients=2, max_message_size=1000)

        def run() -> list[Any]:
            c = self.raw(implicit=True)
            c.cmd("EHLO c.example")
            c.login()
            out = [c.cmd("MAIL FROM:<alice@example.test> SIZE=1001"), c.cmd("MAIL FROM:<alice@example.test> SIZE=10"),
                   c.cmd("RCPT TO:<nobody@example.test>"), c.cmd("RCPT TO:<bob@example.test>"),
                   c.cmd("RCPT TO:<r1@remote.example>"), c.cmd("RCPT TO:<r2@remote.example>"), c.cmd("DATA")]
            c.send(b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 20 + b".\r\n")
            out.append(c.reply())
            out.append(c.cmd("NOOP"))
            return out
        r = await deferToThread(run)
        self.assertEqual(r[0], (552, "552 5.3.4 Message size exceeds fixed limit"))
        self.assertEqual(r[1][0], 250)
        self.assertEqual(r[2], (550, "550 5.1.1 <nobody@example.test>: Recipient address rejected: "
                                     "User unknown in local recipient table"))
        self.assertEqual([x[0] for x in r[3:5]], [250, 250])
        self.assertEqual(r[5], (452, "452 4.5.3 Error: too many recipients"))
        self.assertEqual(r[6][0], 354)
        self.assertEqual(r[7], (552, "552 5.3.4 Message size exceeds fixed limit"))
        self.assertEqual(r[8][0], 250)
        self.assertEqual(self.h.queue.entries(), [])
        self.assertEqual(self.h.inbox("bob"), [])

    async def test_storage_error(self) -> None:
        """A failing fsync (ENOSPC, faked) answers 451 4.3.0, leaves nothing in the queue and keeps the session."""
        import errno
        import os

        def broken(*_: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.h.queue._commit_sync = broken  # type: ignore[method-assign]

        def run() -> list[Any]:
            c = self.raw(implicit=True)
            c.cmd("EHLO c.example")
            c.login()
            c.cmd("MAIL FROM:<alice@example.test>")
            c.cmd("RCPT TO:<far@remote.example>")
            c.cmd("DATA")
            c.send(MSG + b".\r\n")
            return [c.reply(), c.cmd("NOOP")]
        r = await deferToThread(run)
        self.assertEqual(r[0], (451, "451 4.3.0 Error: queue file write error"))
        self.assertEqual(r[1][0], 250)
        self.assertEqual(self.h.queue.entries(), [])
        self.assertEqual(os.listdir(self.h.queue.tmp_dir), [])

    async def test_no_secrets_in_logs(self) -> None:
        """Neither the password nor the SASL blob appears in any log event of a good and a bad login."""
        from twisted.logger import formatEvent, globalLogPublisher

        seen: list[str] = []

        def observer(event: dict) -> None:  # type: ignore[type-arg]
            seen.append(formatEvent(event) + repr(event))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        def run() -> None:
            c = self.raw(implicit=True)
            c.cmd("EHLO c.example")
            c.cmd("AUTH PLAIN " + plain(pw="Wr0ng-secret"))
            c.login()
            c.cmd("QUIT")
        await deferToThread(run)
        text = "\n".join(seen)
        self.assertIn("smtp.auth", text)
        for secret in (PW, "Wr0ng-secret", plain(), plain(pw="Wr0ng-secret")):
            self.assertNotIn(secret, text)
