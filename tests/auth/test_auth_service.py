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
        self.assertEqual(service.mechanisms(CLEAR), ())
        self.assertEqual(service.mechanisms(TLS), ("PLAIN", "LOGIN"))
        self.assertRaises(TLSRequired, service.start, "PLAIN", CLEAR)
        self.assertRaises(TLSRequired, service.start, "LOGIN", CLEAR)
        self.failureResultOf(service.login("alice", "S3cret!", CLEAR), TLSRequired)

    def test_require_tls_listener(self) -> None:
        """A listener that requires TLS offers nothing before it, and only its own mechanisms after."""
        service, _ = make_service(listeners={"secure": ListenerPolicy(("plain",), require_tls=True)})
        self.assertEqual(service.mechanisms(CLEAR), ())
        self.assertEqual(service.mechanisms(TLS), ("PLAIN",))
        self.assertRaises(UnknownMechanism, service.start, "LOGIN", TLS)

    def test_unknown_mechanism(self) -> None:
        """An unknown mechanism raises UnknownMechanism (SMTP 504 5.5.4)."""
        service, _ = make_service()
        e = self.assertRaises(UnknownMechanism, service.start, "CRAM-MD5", TLS)
        self.assertEqual(e.smtp_reply(), b"504 5.5.4 Unrecognized authentication type\r\n")

    def test_lab_plaintext(self) -> None:
        """plaintext_without_tls lets a lab listener use PLAIN in clear."""
        service, _ = make_service(plaintext_without_tls=True,
                                  listeners={"secure": ListenerPolicy(("plain",), require_tls=False)})
        self.assertEqual(service.mechanisms(CLEAR), ("PLAIN",))
        self.assertTrue(service.login_allowed(CLEAR))
        self.assertTrue(ISASLExchange.providedBy(service.start("PLAIN", CLEAR)))
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
        failures = [e for e in events if e.get("event") == "auth_failed"]
        self.assertEqual(len(failures), 1)
        from twisted.logger import formatEvent
        self.assertEqual(formatEvent(failures[0]),
                         'auth_failed proto=imap listener=secure rip=192.0.2.7 user="al?ice?x" mech=PLAIN '
                         'reason=malformed:username')
        self.assertNotIn("nope", repr(failures[0]))

    def test_fail2ban_regex(self) -> None:
        """The line matches the shipped fail2ban failregex with the real peer, whatever the user name."""
        import re
        from twisted.logger import formatEvent
        failregex = re.compile(r'^auth_failed proto=\S+ (?:listener=\S+ )?rip=(?P<host>\S+) user="(?:[^"\\]|\\.)*" '
                               r'mech=\S+ reason=(?!backend_down\b|temporary\b|unavailable\b)\S+\s*$')
        service, _ = make_service()
        names = ['alice', 'DOM\\alice', 'x" rip=203.0.113.1 user="y', 'trail\\', 'caf\u00e9', 'a\r\nauth_failed', "*)(uid=*"]
        for name in names:
            with capturedLogs() as events:
                self.failureResultOf(service.login(name, "nope", TLS), AuthFailed)
            [event] = [e for e in events if e.get("event") == "auth_failed"]
            text = formatEvent(event)
            match = failregex.match(text)
            self.assertIsNotNone(match, text)
            self.assertEqual(match.group("host"), "192.0.2.7")
            self.assertEqual(text.count("rip="), 1, text)


class BrokenDirectory(MemoryDirectory):
    """A backend with a bug (raises a plain exception): a fault injected on purpose."""

    def check_password(self, login: str, password: str) -> Deferred:  # type: ignore[override]
        raise KeyError("bug")


class RobustnessTests(SynchronousTestCase):
    def test_backend_bug_is_temporary(self) -> None:
        """A backend raising an unexpected exception gives AuthUnavailable, never success or a crash."""
        service = AuthService([BrokenDirectory(name="broken")], Clock(), failure_delay=0)
        self.failureResultOf(service.login("alice", "pw", TLS), AuthUnavailable)
        self.flushLoggedErrors(KeyError)

    def test_login_on_ntlm_only_listener(self) -> None:
        """IMAP LOGIN on a listener that allows only NTLM is refused as an unsupported mechanism."""
        service, _ = make_service(listeners={"legacy": ListenerPolicy(("ntlm",), require_tls=False)})
        client = ClientInfo("imap", "legacy", "192.0.2.8", tls=True)
        self.failureResultOf(service.login("alice", "S3cret!", client), UnknownMechanism)

    def test_backend_time_hook(self) -> None:
        """on_backend_time receives the backend name and the seconds each check took."""
        seen: list[tuple[str, float]] = []
        results: list[tuple[str, str, str, str]] = []
        service, _ = make_service(on_backend_time=lambda b, s: seen.append((b, s)),
                                  on_result=lambda *a: results.append(a))
        self.successResultOf(service.login("alice", "S3cret!", TLS))
        self.failureResultOf(service.login("alice", "x", TLS), AuthFailed)
        self.assertEqual(seen, [("memory", 0.0), ("memory", 0.0)])
        self.assertEqual(results, [("imap", "PASSWORD", "memory", "ok"),
                                   ("imap", "PASSWORD", "", "bad_credentials")])

    def test_lookup_unusual_address(self) -> None:
        """lookup accepts RFC 5321 local parts such as o'brien, and refuses control characters."""
        service, directory = make_service()
        directory.add_user("obrien", "pw", ["o'brien@example.test"])
        self.assertEqual(self.successResultOf(service.lookup("o'brien@example.test")).user, "obrien")
        self.assertIsNone(self.successResultOf(service.lookup("ali\r\nce")))

    def test_verifier_bug_releases_budget(self) -> None:
        """A mechanism check that raises a bug is AuthUnavailable and does not leak in-flight budget."""
        service, _ = make_service(limits=None)

        async def broken(cleaned: str) -> tuple[None, str]:
            raise ValueError("bug")

        for _ in range(30):
            self.failureResultOf(service.check("alice", TLS, "NTLM", broken), AuthUnavailable)
        self.flushLoggedErrors(ValueError)
        self.successResultOf(service.login("alice", "S3cret!", TLS))


class ListenerKeyTests(SynchronousTestCase):
    def test_config_section_keys(self) -> None:
        """Policies keyed "imap.NAME" / "submission.NAME" apply to ClientInfo.listener NAME."""
        service, _ = make_service(listeners={"imap.legacy": ListenerPolicy(("ntlm",), require_tls=False),
                                             "submission.relay": ListenerPolicy(("login",), require_tls=True)})
        self.assertRaises(UnknownMechanism, service.start, "PLAIN", ClientInfo("imap", "legacy", "192.0.2.1", tls=True))
        smtp = ClientInfo("smtp", "relay", "192.0.2.1", tls=True)
        self.assertEqual(service.mechanisms(smtp), ("LOGIN",))
        self.assertRaises(UnknownMechanism, service.start, "PLAIN", smtp)

    def test_unknown_listener_fails_closed(self) -> None:
        """A listener missing from the policies (or with none configured) gets nothing before TLS."""
        from mailgw.auth.ntlm import DirectoryNTLMVerifier, NTLMAcceptor
        directory = MemoryDirectory()
        policies = {"imap.secure": ListenerPolicy(("plain",), require_tls=True)}
        service = AuthService([directory], Clock(), failure_delay=0, listeners=policies,
                              ntlm=NTLMAcceptor(DirectoryNTLMVerifier([directory])))
        stray = ClientInfo("imap", "stray", "192.0.2.1", tls=False)
        self.assertEqual(service.mechanisms(stray), ())
        self.assertRaises(TLSRequired, service.start, "NTLM", stray)
        unmapped = AuthService([directory], Clock(), failure_delay=0,
                               ntlm=NTLMAcceptor(DirectoryNTLMVerifier([directory])))
        self.assertEqual(unmapped.mechanisms(stray), ())  # no map at all: fails closed too
        self.assertRaises(TLSRequired, unmapped.start, "NTLM", stray)
        self.assertEqual(unmapped.mechanisms(ClientInfo("imap", "stray", "192.0.2.1", tls=True)), ("PLAIN", "LOGIN", "NTLM"))
