"""AuthService with the in-memory directory: PLAIN, LOGIN, IMAP LOGIN, TLS policy, delays, lookup."""

from __future__ import annotations

import base64

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService, ListenerPolicy
from mailgw.errors import AuthFailed, AuthUnavailable, TLSRequired, UnknownMechanism
from mailgw.interfaces import (ClientInfo, IAuthService, IDirectory, Identity, ISASLExchange, SASLChallenge,
                               SASLSuccess)

TLS = ClientInfo("imap", "secure", "192.0.2.7", 50000, tls=True)
CLEAR = ClientInfo("imap", "secure", "192.0.2.7", 50000, tls=False)


def make_service(clock: Clock | None = None, delay: float = 0.0, **kw: object) -> tuple[AuthService, MemoryDirectory]:
    directory = MemoryDirectory()
    directory.add_user("alice", "S3cret!", ["alice@example.test", "a.liddell@example.test"])
    directory.add_user("bob", "hunter2", ["bob@example.test"])
    return AuthService([directory], clock or Clock(), failure_delay=delay, **kw), directory  # type: ignore[arg-type]


class DownDirectory(MemoryDirectory):
    """A backend that is always unreachable (a fault we inject instead of a dead server)."""

    def check_password(self, login: str, password: str) -> Deferred:  # type: ignore[override]
        d: Deferred = Deferred()
        d.errback(AuthUnavailable(detail="down"))
        return d

    def lookup(self, login: str) -> Deferred:  # type: ignore[override]
        return self.check_password(login, "")


class InterfaceTests(SynchronousTestCase):
    def test_provides(self) -> None:
        """AuthService, MemoryDirectory and the exchanges provide their interfaces."""
        service, directory = make_service()
        verifyObject(IAuthService, service)
        verifyObject(IDirectory, directory)
        verifyObject(ISASLExchange, service.start("PLAIN", TLS))
        verifyObject(ISASLExchange, service.start("LOGIN", TLS))


class PlainTests(SynchronousTestCase):
    def test_plain_initial_response(self) -> None:
        """PLAIN with an initial response and the right password gives the canonical identity."""
        service, _ = make_service()
        result = self.successResultOf(service.start("PLAIN", TLS).step(b"\0alice@example.test\0S3cret!"))
        self.assertIsInstance(result, SASLSuccess)
        self.assertEqual(result.identity.user, "alice")
        self.assertEqual(result.identity.backend, "memory")

    def test_plain_without_initial_response(self) -> None:
        """PLAIN without an initial response first sends an empty challenge."""
        service, _ = make_service()
        exchange = service.start("plain", TLS)
        self.assertEqual(self.successResultOf(exchange.step(None)), SASLChallenge(b""))
        self.assertEqual(self.successResultOf(exchange.step(b"\0bob\0hunter2")).identity.user, "bob")

    def test_plain_wrong_and_unknown_identical(self) -> None:
        """Wrong password and unknown user fail with the same error class and public text."""
        service, _ = make_service()
        wrong = self.failureResultOf(service.start("PLAIN", TLS).step(b"\0alice\0nope"), AuthFailed).value
        unknown = self.failureResultOf(service.start("PLAIN", TLS).step(b"\0mallory\0nope"), AuthFailed).value
        self.assertEqual((type(wrong), wrong.public, wrong.smtp_reply()),
                         (type(unknown), unknown.public, unknown.smtp_reply()))
        self.assertEqual((wrong.reason, unknown.reason), ("bad_password", "unknown_user"))

    def test_plain_authzid_must_match(self) -> None:
        """A PLAIN authorization identity naming another user is refused even with the right password."""
        service, _ = make_service()
        f = self.failureResultOf(service.start("PLAIN", TLS).step(b"bob\0alice\0S3cret!"), AuthFailed)
        self.assertEqual(f.value.reason, "authzid_mismatch")
        ok = self.successResultOf(service.start("PLAIN", TLS).step(b"alice@example.test\0alice\0S3cret!"))
        self.assertEqual(ok.identity.user, "alice")

    def test_plain_proxy_user(self) -> None:
        """A configured proxy user may act as another account through the authorization identity."""
        service, _ = make_service(proxy_users=["alice"])
        ok = self.successResultOf(service.start("PLAIN", TLS).step(b"bob\0alice\0S3cret!"))
        self.assertEqual(ok.identity.user, "bob")

    def test_plain_malformed(self) -> None:
        """A PLAIN message without two NULs, or with bad UTF-8, fails cleanly as malformed."""
        service, _ = make_service()
        for data in (b"alice", b"\0alice\0pw\0extra", b"\0\xff\xfe\0pw", b"\0alice\0" + b"x" * 5000):
            f = self.failureResultOf(service.start("PLAIN", TLS).step(data), AuthFailed)
            self.assertTrue(f.value.reason.startswith("malformed"), f.value.reason)

    def test_empty_password_refused(self) -> None:
        """An empty password fails without reaching the backend check."""
        service, _ = make_service()
        f = self.failureResultOf(service.start("PLAIN", TLS).step(b"\0alice\0"), AuthFailed)
        self.assertEqual(f.value.reason, "empty_password")


class LoginMechTests(SynchronousTestCase):
    def test_login_prompts(self) -> None:
        """LOGIN prompts exactly 'Username:' and 'Password:' (base64 VXNlcm5hbWU6 / UGFzc3dvcmQ6)."""
        service, _ = make_service()
        exchange = service.start("LOGIN", TLS)
        first = self.successResultOf(exchange.step(None))
        self.assertEqual(base64.b64encode(first.data), b"VXNlcm5hbWU6")
        second = self.successResultOf(exchange.step(b"alice"))
        self.assertEqual(base64.b64encode(second.data), b"UGFzc3dvcmQ6")
        self.assertEqual(self.successResultOf(exchange.step(b"S3cret!")).identity.user, "alice")

    def test_login_initial_response(self) -> None:
        """LOGIN takes the user name as initial response (as smtplib sends it)."""
        service, _ = make_service()
        exchange = service.start("LOGIN", TLS)
        self.assertEqual(self.successResultOf(exchange.step(b"bob")), SASLChallenge(b"Password:"))
        self.assertEqual(self.successResultOf(exchange.step(b"hunter2")).identity.user, "bob")

    def test_login_wrong(self) -> None:
        """LOGIN with a wrong password fails with AuthFailed."""
        service, _ = make_service()
        exchange = service.start("LOGIN", TLS)
        exchange.step(b"bob")
        self.failureResultOf(exchange.step(b"wrong"), AuthFailed)

    def test_step_after_done(self) -> None:
        """A step after the exchange finished fails rather than re-running it."""
        service, _ = make_service()
        exchange = service.start("PLAIN", TLS)
        self.successResultOf(exchange.step(b"\0bob\0hunter2"))
        self.failureResultOf(exchange.step(b"\0bob\0hunter2"), AuthFailed)


class PolicyTests(SynchronousTestCase):
    def test_no_plaintext_before_tls(self) -> None:
        """PLAIN and LOGIN are neither offered nor accepted before TLS."""
        service, _ = make_service()
        self.assertEqual(service.mechanisms(CLEAR, ("plain", "login"), False), ())
        self.assertEqual(service.mechanisms(TLS, ("basic",), True), ("PLAIN", "LOGIN"))
        self.assertRaises(TLSRequired, service.start, "PLAIN", CLEAR)
        self.assertRaises(TLSRequired, service.start, "LOGIN", CLEAR)
        self.failureResultOf(service.login("alice", "S3cret!", CLEAR), TLSRequired)

    def test_require_tls_listener(self) -> None:
        """A listener that requires TLS offers nothing before it, and only its own mechanisms after."""
        service, _ = make_service(listeners={"secure": ListenerPolicy(("plain",), require_tls=True)})
        self.assertEqual(service.mechanisms(CLEAR, ("plain", "login"), True), ())
        self.assertEqual(service.mechanisms(TLS, ("plain", "login"), True), ("PLAIN",))
        self.assertRaises(UnknownMechanism, service.start, "LOGIN", TLS)

    def test_unknown_mechanism(self) -> None:
        """An unknown mechanism raises UnknownMechanism (SMTP 504 5.5.4)."""
        service, _ = make_service()
        e = self.assertRaises(UnknownMechanism, service.start, "CRAM-MD5", TLS)
        self.assertEqual(e.smtp_reply(), b"504 5.5.4 Unrecognized authentication type\r\n")

    def test_lab_plaintext(self) -> None:
        """plaintext_without_tls lets a lab listener use PLAIN in clear."""
        service, _ = make_service(plaintext_without_tls=True)
        self.assertEqual(service.mechanisms(CLEAR, ("plain",), False), ("PLAIN",))
        self.successResultOf(service.login("alice", "S3cret!", CLEAR))


class DelayTests(SynchronousTestCase):
    def test_failure_delayed(self) -> None:
        """A failure is answered only after the failure delay on the reactor clock; success at once."""
        clock = Clock()
        service, _ = make_service(clock, delay=2.0)
        d = service.login("alice", "wrong", TLS)
        self.assertNoResult(d)
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, AuthFailed)
        self.successResultOf(service.login("alice", "S3cret!", TLS))

    def test_unknown_user_same_delay(self) -> None:
        """Unknown user and wrong password are answered at the same clock time."""
        clock = Clock()
        service, _ = make_service(clock, delay=2.0)
        a = service.login("alice", "wrong", TLS)
        b = service.login("nobody", "wrong", TLS)
        clock.advance(1.99)
        self.assertNoResult(a)
        self.assertNoResult(b)
        clock.advance(0.01)
        self.failureResultOf(a, AuthFailed)
        self.failureResultOf(b, AuthFailed)


class BackendOrderTests(SynchronousTestCase):
    def test_second_backend(self) -> None:
        """A user unknown to the first backend is found in the second."""
        first = MemoryDirectory(name="first")
        second = MemoryDirectory(name="second")
        second.add_user("carol", "pw")
        service = AuthService([first, second], Clock(), failure_delay=0)
        self.assertEqual(self.successResultOf(service.login("carol", "pw", TLS)), Identity("carol", (), "second"))

    def test_outage_is_temporary(self) -> None:
        """A failed check while a backend is down is a temporary failure, not a bad password."""
        live = MemoryDirectory(name="live")
        live.add_user("carol", "pw")
        service = AuthService([DownDirectory(name="down"), live], Clock(), failure_delay=0)
        self.successResultOf(service.login("carol", "pw", TLS))
        f = self.failureResultOf(service.login("carol", "wrong", TLS), AuthUnavailable)
        self.assertEqual(f.value.smtp_reply(), b"454 4.7.0 Temporary authentication failure\r\n")
        self.failureResultOf(service.lookup("nobody@example.test"), AuthUnavailable)


class LookupTests(SynchronousTestCase):
    def test_lookup_address(self) -> None:
        """lookup resolves uid, address and DOMAIN\\uid to the same identity; unknown gives None."""
        service, _ = make_service()
        for name in ("alice", "A.Liddell@example.test", "EXAMPLE\\alice"):
            self.assertEqual(self.successResultOf(service.lookup(name)).user, "alice")
        self.assertIsNone(self.successResultOf(service.lookup("nobody@example.test")))
        self.assertIsNone(self.successResultOf(service.lookup("*)(uid=*")))


class LogTests(SynchronousTestCase):
    def test_failure_log_line(self) -> None:
        """Every failure is one auth_failed event with peer, listener, mechanism and sanitised user."""
        service, _ = make_service()
        with capturedLogs() as events:
            self.failureResultOf(service.start("PLAIN", TLS).step(b'\0al"ice x\0nope'), AuthFailed)
        failures = [e for e in events if e.get("event") == "auth.failure"]
        self.assertEqual(len(failures), 1)
        from twisted.logger import formatEvent
        self.assertEqual(formatEvent(failures[0]),
                         'auth_failed proto=imap listener=secure rip=192.0.2.7 user="al?ice?x" mech=PLAIN '
                         'reason=malformed:username')
        self.assertNotIn("nope", repr(failures[0]))
