"""LDAPDirectory against a private slapd: passwords, injection, outages, timeouts, failover, TLS, groups, NTLM."""

from __future__ import annotations

import re
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.ldap_fixture import SlapdFixture, available

from mailgw.auth.ldap import LDAPDirectory  # noqa: E402
from mailgw.auth.ntlm import DirectoryNTLMVerifier, NTLMAcceptor  # noqa: E402
from mailgw.auth.service import AuthService  # noqa: E402
from mailgw.errors import AuthFailed, AuthUnavailable, ConfigError  # noqa: E402
from mailgw.interfaces import ClientInfo, Identity  # noqa: E402

TLS = ClientInfo("imap", "secure", "192.0.2.7", tls=True)
INJECTIONS = ["*", "*)(uid=*", ")(|(uid=*", "alice)(uid=*", "bob)(description=prefix*", "al*", "alice\0",
              "(uid=alice)", "\\2a", "x" * 65536]


def dead_url() -> str:
    """An ldap:// URL on a loopback port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ldap://127.0.0.1:{port}"


class LDAPCase(TestCase):
    tls = True
    log_level = 0

    def setUp(self) -> None:
        if not available():
            raise self.skipTest("slapd not installed")
        self.slapd = SlapdFixture(tls=self.tls, log_level=self.log_level).start()
        self.addCleanup(self.slapd.stop)

    def directory(self, urls: Any = None, **kw: Any) -> LDAPDirectory:
        options: dict[str, Any] = dict(starttls=True, ca_file=self.slapd.ca_file, timeout=2,
                                       nt_hash_attribute="sambaNTPassword")
        options.update(kw)
        d = LDAPDirectory("ldap.test", urls or [self.slapd.url], self.slapd.bind_dn, self.slapd.bind_password,
                          self.slapd.user_base, reactor, **options)
        self.addCleanup(d.close)
        return d

    def service(self, directory: LDAPDirectory) -> AuthService:
        return AuthService([directory], reactor, failure_delay=0)


class PasswordTests(LDAPCase):
    @inlineCallbacks
    def test_good_and_bad(self):  # type: ignore[no-untyped-def]
        """Right password by uid, mail or DOMAIN\\uid gives the entry's uid; wrong ones are bad_password."""
        d = self.directory()
        for login in ("alice", "alice@example.test", "A.Liddell@example.test", "EXAMPLE\\alice"):
            identity = yield d.check_password(login, "S3cret!")
            self.assertEqual(identity, Identity("alice", ("alice@example.test", "a.liddell@example.test"),
                                                "ldap.test"))
        self.assertEqual((yield d.check_password("alice", "s3cret!")), "bad_password")
        self.assertEqual((yield d.check_password("nobody", "S3cret!")), "unknown_user")
        self.assertEqual((yield d.check_password("carol", "pa(ss)*\\word")).user, "carol")

    @inlineCallbacks
    def test_through_service(self):  # type: ignore[no-untyped-def]
        """The service reports a wrong LDAP password as AuthFailed, and logs in with the right one."""
        service = self.service(self.directory())
        self.assertEqual((yield service.login("bob", "hunter2", TLS)).user, "bob")
        yield self.assertFailure(service.login("bob", "hunter3", TLS), AuthFailed)

    @inlineCallbacks
    def test_lookup(self):  # type: ignore[no-untyped-def]
        """lookup resolves an address to the canonical uid; unknown addresses to None."""
        d = self.directory()
        self.assertEqual((yield d.lookup("a.liddell@example.test")).user, "alice")
        self.assertIsNone((yield d.lookup("nobody@example.test")))

    @inlineCallbacks
    def test_ambiguous_is_outage(self):  # type: ignore[no-untyped-def]
        """Two entries matching one login are a temporary failure, never a guess or a bad password."""
        d = self.directory()
        yield self.assertFailure(d.check_password("shared@example.test", "eve-pw"), AuthUnavailable)

    @inlineCallbacks
    def test_require_group(self):  # type: ignore[no-untyped-def]
        """With require_group, a user outside the group fails with the right password; members log in."""
        d = self.directory(require_group=self.slapd.group_dn)
        self.assertEqual((yield d.check_password("gina", "gina-pw")), "not_in_group")
        self.assertEqual((yield d.check_password("alice", "S3cret!")).user, "alice")

    @inlineCallbacks
    def test_wrong_service_password(self):  # type: ignore[no-untyped-def]
        """A service bind that fails is an outage, not a bad user password."""
        d = LDAPDirectory("ldap.test", [self.slapd.url], self.slapd.bind_dn, "wrong", self.slapd.user_base, reactor,
                          starttls=True, ca_file=self.slapd.ca_file, timeout=2)
        self.addCleanup(d.close)
        yield self.assertFailure(d.check_password("alice", "S3cret!"), AuthUnavailable)


class InjectionTests(LDAPCase):
    log_level = 256  # slapd logs every SRCH filter and BIND dn

    @inlineCallbacks
    def test_filter_injection(self):  # type: ignore[no-untyped-def]
        """Filter metacharacters in the login never match another entry; they fail like a wrong password."""
        d = self.directory()
        for login in INJECTIONS:
            for password in ("S3cret!", "hunter2", "x"):
                verdict = yield d.check_password(login, password)
                self.assertFalse(isinstance(verdict, Identity), login)
                self.assertIn(verdict, ("unknown_user", "bad_password"), login)
        service = self.service(d)
        for login in INJECTIONS[:5]:
            yield self.assertFailure(service.login(login, "S3cret!", TLS), AuthFailed)
        log = self.slapd.log_text()
        filters = re.findall(r'SRCH base=.* filter="([^"]*)"', log)
        self.assertTrue(filters)
        self.assertTrue(any("\\2a\\29\\28uid=\\2a" in f.lower() for f in filters), filters[:5])
        for f in filters:
            self.assertNotIn("*)(", f)
        self.assertNotIn("BIND dn=\"uid=bob", log)  # no bind as another entry was ever attempted

    @inlineCallbacks
    def test_empty_password_no_bind(self):  # type: ignore[no-untyped-def]
        """An empty password fails without any bind as the user (RFC 4513 §5.1.2)."""
        d = self.directory()
        self.assertEqual((yield d.check_password("alice", "")), "bad_password")
        yield self.assertFailure(self.service(d).login("alice", "", TLS), AuthFailed)
        self.assertNotIn('BIND dn="uid=alice', self.slapd.log_text())


class OutageTests(LDAPCase):
    @inlineCallbacks
    def test_down_then_back(self):  # type: ignore[no-untyped-def]
        """With slapd stopped a login is AuthUnavailable (454 4.7.0); after restart the next login works."""
        d = self.directory()
        service = self.service(d)
        self.assertEqual((yield service.login("alice", "S3cret!", TLS)).user, "alice")
        self.slapd.stop_server()
        e = yield self.assertFailure(service.login("alice", "S3cret!", TLS), AuthUnavailable)
        self.assertEqual(e.smtp_reply(), b"454 4.7.0 Temporary authentication failure\r\n")
        self.assertEqual(e.imap_code, "UNAVAILABLE")
        yield self.assertFailure(service.lookup("alice@example.test"), AuthUnavailable)
        self.slapd.restart()
        d._down_until.clear()  # skip the 10 s hold-down for the test
        self.assertEqual((yield service.login("alice", "S3cret!", TLS)).user, "alice")

    @inlineCallbacks
    def test_stalled_server_times_out(self):  # type: ignore[no-untyped-def]
        """A server that accepts but never answers gives AuthUnavailable after the timeout."""
        errors: list[str] = []
        d = self.directory(timeout=1, on_error=lambda server, kind: errors.append(kind))
        self.slapd.pause()
        self.addCleanup(self.slapd.resume)
        started = reactor.seconds()
        yield self.assertFailure(d.check_password("alice", "S3cret!"), AuthUnavailable)
        self.assertLess(reactor.seconds() - started, 10)
        self.assertIn("timeout", errors)

    @inlineCallbacks
    def test_failover(self):  # type: ignore[no-untyped-def]
        """A dead first URL is skipped and the second one serves."""
        d = self.directory([dead_url(), self.slapd.url])
        self.assertEqual((yield d.check_password("bob", "hunter2")).user, "bob")

    @inlineCallbacks
    def test_all_dead(self):  # type: ignore[no-untyped-def]
        """When no URL answers, the result is AuthUnavailable, never a bad password; errors are counted."""
        errors: list[tuple[str, str]] = []
        urls = [dead_url(), dead_url()]
        d = self.directory(urls, on_error=lambda server, kind: errors.append((server, kind)))
        yield self.assertFailure(d.check_password("bob", "hunter2"), AuthUnavailable)
        self.assertEqual({kind for _, kind in errors}, {"connect"})
        self.assertEqual({server for server, _ in errors}, set(urls))


class TLSTests(LDAPCase):
    @inlineCallbacks
    def test_ldaps_and_starttls(self):  # type: ignore[no-untyped-def]
        """ldaps:// and ldap:// + StartTLS both verify the server against ca_file."""
        for urls, starttls in (([self.slapd.ldaps_url], False), ([self.slapd.url], True)):
            d = self.directory(urls, starttls=starttls)
            self.assertEqual((yield d.check_password("alice", "S3cret!")).user, "alice")

    @inlineCallbacks
    def test_untrusted_ca_is_outage(self):  # type: ignore[no-untyped-def]
        """A server certificate from another CA is an outage (AuthUnavailable), not a bad password."""
        for urls, starttls in (([self.slapd.ldaps_url], False), ([self.slapd.url], True)):
            d = self.directory(urls, starttls=starttls, ca_file=self.slapd.other_ca_file)
            yield self.assertFailure(d.check_password("alice", "S3cret!"), AuthUnavailable)
            yield self.assertFailure(self.service(d).login("alice", "S3cret!", TLS), AuthUnavailable)


class NTHashTests(LDAPCase):
    @inlineCallbacks
    def test_nt_hash(self):  # type: ignore[no-untyped-def]
        """The service account reads sambaNTPassword; a disabled account gets none."""
        d = self.directory()
        identity, value = yield d.nt_hash("EXAMPLE\\alice")
        self.assertEqual((identity.user, value.hex().upper()), ("alice", self.slapd.users["alice"].nt_hash))
        self.assertIsNone((yield d.nt_hash("dave")))
        self.assertIsNone((yield d.nt_hash("nobody")))

    @inlineCallbacks
    def test_ntlm_via_ldap(self):  # type: ignore[no-untyped-def]
        """NTLMv2 from pyspnego verifies against the directory's NT hash and maps to the uid."""
        import spnego
        d = self.directory()
        service = AuthService([d], reactor, failure_delay=0,
                              ntlm=NTLMAcceptor(DirectoryNTLMVerifier([d]), domain="EXAMPLE"))
        for password, ok in (("S3cret!", True), ("wrong", False)):
            client = spnego.client("EXAMPLE\\alice", password, hostname="gw", protocol="ntlm")
            exchange = service.start("NTLM", TLS)
            type2 = yield exchange.step(client.step())
            d3 = exchange.step(client.step(type2.data))
            if ok:
                self.assertEqual((yield d3).identity.user, "alice")
            else:
                yield self.assertFailure(d3, AuthFailed)


class ConfigTests(SynchronousTestCase):
    def test_plaintext_refused(self) -> None:
        """ldap:// without StartTLS, bad schemes and filters without {login} are ConfigErrors."""
        args = ("cn=svc", "pw", "ou=people", reactor)
        self.assertRaises(ConfigError, LDAPDirectory, "ldap.x", ["ldap://127.0.0.1"], *args)
        self.assertRaises(ConfigError, LDAPDirectory, "ldap.x", ["http://x"], *args)
        self.assertRaises(ConfigError, LDAPDirectory, "ldap.x", [], *args)
        self.assertRaises(ConfigError, LDAPDirectory, "ldap.x", ["ldaps://x"], *args, user_filter="(uid=alice)")
        directory = LDAPDirectory("ldap.x", ["ldaps://x"], *args)
        self.assertNotIn("pw", repr(directory))
        from zope.interface.verify import verifyObject
        from mailgw.interfaces import IDirectory
        verifyObject(IDirectory, directory)
        directory.close()
