"""Transcripts of the any-state and not-authenticated commands: capabilities, LOGIN, AUTHENTICATE, STARTTLS."""

from __future__ import annotations

import base64

from twisted.internet.defer import fail
from twisted.trial import unittest

from mailgw.errors import AuthUnavailable
from mailgw.imap.commands.auth import MAX_SASL_LINE

from tests.imap.imap_testing import PASSWORD, Harness

PRE_TLS_CAPS = b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE STARTTLS LOGINDISABLED"
TLS_CAPS = b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE AUTH=PLAIN AUTH=LOGIN"
AUTHED_CAPS = (b"IMAP4rev1 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE "
               b"APPENDLIMIT=52428800")


def plain(user: str = "alice", password: str = PASSWORD) -> bytes:
    return base64.b64encode(b"\x00" + user.encode() + b"\x00" + password.encode())


class CapabilityTests(unittest.SynchronousTestCase):
    """Capabilities are advertised honestly per state."""

    def test_greeting_before_tls(self) -> None:
        """On a require_tls plain port the greeting offers STARTTLS and LOGINDISABLED and no AUTH=."""
        c = Harness().connect(tls=False)
        self.assertEqual(c.greeting, b"* OK [CAPABILITY " + PRE_TLS_CAPS + b"] mailgw ready.\r\n")

    def test_capability_under_tls(self) -> None:
        """Under TLS, AUTH=PLAIN and AUTH=LOGIN appear and STARTTLS/LOGINDISABLED do not."""
        c = Harness().connect(tls=True)
        self.assertEqual(c.send(b"a CAPABILITY\r\n"),
                         b"* CAPABILITY " + TLS_CAPS + b"\r\na OK Capability completed.\r\n")

    def test_capability_after_login(self) -> None:
        """After login the extensions are listed and no AUTH= remains."""
        c = Harness().connect()
        c.login()
        self.assertEqual(c.send(b"a CAPABILITY\r\n"),
                         b"* CAPABILITY " + AUTHED_CAPS + b"\r\na OK Capability completed.\r\n")

    def test_imaps_has_no_starttls(self) -> None:
        """A server without a certificate (or already in TLS) never offers STARTTLS."""
        c = Harness(with_tls=False, require_tls=False, mechanisms=("PLAIN",)).connect(tls=False)
        self.assertNotIn(b"STARTTLS", c.greeting)
        self.assertIn(b"LOGINDISABLED", c.greeting)  # PLAIN is never offered in clear

    def test_noop_id_enable(self) -> None:
        """NOOP, ID and ENABLE answer with their untagged data."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a NOOP\r\n"), b"a OK NOOP completed.\r\n")
        self.assertEqual(c.send(b'b ID ("name" "test")\r\n'), b'* ID ("name" "mailgw")\r\nb OK ID completed.\r\n')
        c.login()
        self.assertEqual(c.send(b"c ENABLE CONDSTORE\r\n"), b"* ENABLED\r\nc OK Enabled.\r\n")

    def test_logout(self) -> None:
        """LOGOUT sends BYE, the tagged OK, and closes."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a LOGOUT\r\n"), b"* BYE Logging out\r\na OK Logout completed.\r\n")
        self.assertTrue(c.transport.disconnecting)


class PlaintextBeforeTLSTests(unittest.SynchronousTestCase):
    """security.md A4: no credential before TLS on a require_tls server, and the checker is never asked."""

    def test_login_refused(self) -> None:
        """LOGIN before TLS gets NO [PRIVACYREQUIRED]; the directory is not consulted."""
        h = Harness()
        c = h.connect(tls=False)
        self.assertEqual(c.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n"),
                         b"* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it "
                         b"anyway. If anyone was listening, the password was exposed.\r\n"
                         b"a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) "
                         b"connections.\r\n")
        self.assertEqual(h.asked, 0)
        self.assertEqual(c.proto.state, "nonauth")

    def test_authenticate_refused_before_continuation(self) -> None:
        """AUTHENTICATE PLAIN (with or without SASL-IR) before TLS: NO [PRIVACYREQUIRED] and no '+'."""
        h = Harness()
        c = h.connect(tls=False)
        self.assertEqual(c.send(b"a AUTHENTICATE PLAIN\r\n"),
                         b"a NO [PRIVACYREQUIRED] Plaintext authentication disabled.\r\n")
        self.assertEqual(c.send(b"b AUTHENTICATE PLAIN " + plain() + b"\r\n"),
                         b"b NO [PRIVACYREQUIRED] Plaintext authentication disabled.\r\n")
        self.assertEqual(c.send(b"c AUTHENTICATE NTLM\r\n"),
                         b"c NO [PRIVACYREQUIRED] Plaintext authentication disabled.\r\n")
        self.assertEqual(h.asked, 0)

    def test_ntlm_only_server_capabilities(self) -> None:
        """A non-encrypted server with auth = ["ntlm"] offers AUTH=NTLM and LOGINDISABLED; LOGIN is refused."""
        class FakeNTLM:
            mechanism = "NTLM"

            def start(self, service: object, client: object) -> object:
                raise AssertionError("not used")

        h = Harness(require_tls=False, mechanisms=("NTLM",), ntlm=FakeNTLM(), with_tls=False)
        c = h.connect(tls=False)
        self.assertEqual(c.greeting, b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE AUTH=NTLM "
                                     b"LOGINDISABLED] mailgw ready.\r\n")
        self.assertIn(b"\r\na NO [PRIVACYREQUIRED]", c.send(b"a LOGIN alice x\r\n"))
        self.assertEqual(c.send(b"b AUTHENTICATE PLAIN\r\n"),
                         b"b NO [PRIVACYREQUIRED] Plaintext authentication disabled.\r\n")
        self.assertEqual(h.asked, 0)


class PolicyOwnerTests(unittest.SynchronousTestCase):
    """The session asks the credential service; it holds no mechanism list or require_tls of its own."""

    def test_service_policy_change_reaches_sessions(self) -> None:
        """A policy adopted by the service (as a reload does) changes what a new session offers and accepts."""
        from mailgw.auth.service import AuthService, ListenerPolicy

        h = Harness()
        self.assertIn(b"AUTH=LOGIN", h.connect(tls=True).send(b"a CAPABILITY\r\n"))
        fresh = AuthService([h.directory], h.reactor, listeners={"test": ListenerPolicy(("plain",), require_tls=True)})
        h.auth.adopt(fresh, directories=False)
        c = h.connect(tls=True)
        self.assertEqual(c.send(b"b CAPABILITY\r\n"), b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE AUTH=PLAIN\r\n"
                                                        b"b OK Capability completed.\r\n")
        self.assertEqual(c.send(b"c AUTHENTICATE LOGIN\r\n"), b"c NO Unsupported authentication mechanism.\r\n")
        self.assertTrue(c.login().startswith(b"L OK"))  # LOGIN is allowed where PLAIN is


class StartTLSTests(unittest.SynchronousTestCase):
    """STARTTLS discards pipelined plaintext (CVE-2011-0411 class) and recomputes capabilities."""

    def test_injected_commands_are_dropped(self) -> None:
        """Commands after STARTTLS in the same segment are never answered, before or after the handshake."""
        h = Harness()
        c = h.connect(tls=False)
        out = c.send(b"a STARTTLS\r\nb LOGIN alice " + PASSWORD.encode() + b"\r\nc CAPABILITY\r\n")
        self.assertEqual(out, b"a OK Begin TLS negotiation now.\r\n")
        self.assertEqual(c.transport.tls_started, ["ctx"])
        self.assertEqual(h.asked, 0)
        self.assertEqual(c.send(b"d CAPABILITY\r\n"),
                         b"* CAPABILITY " + TLS_CAPS + b"\r\nd OK Capability completed.\r\n")
        self.assertEqual(c.proto.state, "nonauth")

    def test_starttls_twice(self) -> None:
        """STARTTLS inside TLS is a BAD, and it is not allowed after login."""
        c = Harness().connect(tls=True)
        self.assertEqual(c.send(b"a STARTTLS\r\n"), b"a BAD TLS is already active.\r\n")
        c.login()
        self.assertEqual(c.send(b"b STARTTLS\r\n"), b"b BAD Already authenticated.\r\n")


class LoginTests(unittest.SynchronousTestCase):
    """LOGIN through the shared auth service."""

    def test_login_ok(self) -> None:
        """A good LOGIN answers OK with the post-login capabilities."""
        c = Harness().connect()
        self.assertEqual(c.login(), b"L OK [CAPABILITY " + AUTHED_CAPS + b"] Logged in\r\n")
        self.assertEqual(c.proto.state, "auth")

    def test_quoted_and_literal_login(self) -> None:
        """User and password may be quoted strings or literals."""
        c = Harness().connect()
        self.assertEqual(c.send(b'a LOGIN "alice" {%d}\r\n' % len(PASSWORD)), b"+ Ready for literal data\r\n")
        self.assertTrue(c.send(PASSWORD.encode() + b"\r\n").startswith(b"a OK [CAPABILITY"))

    def test_three_failures_close(self) -> None:
        """Failures answer NO [AUTHENTICATIONFAILED]; the third one is followed by BYE and a close."""
        c = Harness().connect()
        fail_line = b"NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
        self.assertEqual(c.send(b"a LOGIN alice wrong\r\n"), b"a " + fail_line)
        self.assertEqual(c.send(b"b LOGIN nobody wrong\r\n"), b"b " + fail_line)
        self.assertEqual(c.send(b"c LOGIN alice wrong\r\n"),
                         b"c " + fail_line + b"* BYE Too many invalid authentication attempts\r\n")
        self.assertTrue(c.transport.disconnecting)

    def test_unavailable(self) -> None:
        """A directory outage is NO [UNAVAILABLE] Temporary authentication failure, not a bad password."""
        h = Harness()
        h.directory.check_password = lambda login, password: fail(AuthUnavailable())  # type: ignore[method-assign]
        c = h.connect()
        self.assertEqual(c.send(b"a LOGIN alice x\r\n"),
                         b"a NO [UNAVAILABLE] Temporary authentication failure\r\n")


class AuthenticateTests(unittest.SynchronousTestCase):
    """AUTHENTICATE: continuations on one line with '+ ', SASL-IR, '*' cancel."""

    def test_plain_with_continuation(self) -> None:
        """AUTHENTICATE PLAIN asks with '+ ' and accepts the response line."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a AUTHENTICATE PLAIN\r\n"), b"+ \r\n")
        self.assertTrue(c.send(plain() + b"\r\n").startswith(b"a OK [CAPABILITY"))

    def test_plain_sasl_ir(self) -> None:
        """RFC 4959 initial response on the command line."""
        c = Harness().connect()
        self.assertTrue(c.send(b"a AUTHENTICATE PLAIN " + plain() + b"\r\n").startswith(b"a OK [CAPABILITY"))

    def test_login_mechanism(self) -> None:
        """AUTHENTICATE LOGIN prompts Username: and Password: in base64 on single lines."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a AUTHENTICATE LOGIN\r\n"), b"+ VXNlcm5hbWU6\r\n")
        self.assertEqual(c.send(base64.b64encode(b"alice") + b"\r\n"), b"+ UGFzc3dvcmQ6\r\n")
        self.assertTrue(c.send(base64.b64encode(PASSWORD.encode()) + b"\r\n").startswith(b"a OK"))

    def test_cancel(self) -> None:
        """'*' cancels with BAD Authentication aborted and the session continues."""
        c = Harness().connect()
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(c.send(b"*\r\n"), b"a BAD Authentication aborted\r\n")
        self.assertEqual(c.send(b"b NOOP\r\n"), b"b OK NOOP completed.\r\n")

    def test_bad_base64_and_failures(self) -> None:
        """Invalid base64 is BAD Invalid base64; a wrong password is NO [AUTHENTICATIONFAILED]."""
        c = Harness().connect()
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(c.send(b"%%%\r\n"), b"a BAD Invalid base64\r\n")
        self.assertEqual(c.send(b"b AUTHENTICATE PLAIN " + plain(password="nope") + b"\r\n"),
                         b"b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")

    def test_too_long_response(self) -> None:
        """A SASL response over 12 KiB is BAD Line too long."""
        c = Harness().connect()
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(c.send(b"A" * (MAX_SASL_LINE + 4) + b"\r\n"), b"a BAD Line too long\r\n")

    def test_unknown_mechanism(self) -> None:
        """An unknown mechanism is NO Unsupported authentication mechanism."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a AUTHENTICATE GSSAPI\r\n"), b"a NO Unsupported authentication mechanism.\r\n")

    def test_commands_need_auth(self) -> None:
        """Authenticated-state commands before login are BAD."""
        c = Harness().connect()
        self.assertEqual(c.send(b"a SELECT INBOX\r\n"), b"a BAD Not authenticated.\r\n")
        self.assertEqual(c.send(b"b FETCH 1 FLAGS\r\n"), b"b BAD No mailbox selected.\r\n")


class MetricsTests(unittest.SynchronousTestCase):
    """Commands and connections are counted with bounded labels."""

    def test_command_and_connection_counters(self) -> None:
        """A NOOP counts as command=NOOP status=ok; an unknown command is not a label; connections are gauged."""
        from mailgw.observe.metrics import REGISTRY

        def sample(name: str, **labels: str) -> float:
            return REGISTRY.get_sample_value(name, labels) or 0.0

        noop = sample("mailgw_imap_commands_total", command="NOOP", status="ok")
        bad = sample("mailgw_imap_commands_total", command="LOGIN", status="no")
        active = sample("mailgw_connections_active", listener="test", protocol="imap")
        c = Harness().connect(tls=False)
        self.assertEqual(sample("mailgw_connections_active", listener="test", protocol="imap"), active + 1)
        c.send(b"a NOOP\r\nb LOGIN x y\r\nc FROB\r\n")
        self.assertEqual(sample("mailgw_imap_commands_total", command="NOOP", status="ok"), noop + 1)
        self.assertEqual(sample("mailgw_imap_commands_total", command="LOGIN", status="no"), bad + 1)
        self.assertIsNone(REGISTRY.get_sample_value("mailgw_imap_commands_total", {"command": "FROB", "status": "bad"}))
        c.proto.connectionLost(None)
        self.assertEqual(sample("mailgw_connections_active", listener="test", protocol="imap"), active)


class UserIPCapTests(unittest.SynchronousTestCase):
    """At most max_user_ip_sessions logged-in IMAP sessions per (user, client IP)."""

    def test_cap(self) -> None:
        """The third login from the same IP with a cap of 2 is refused with NO [LIMIT] and BYE."""
        from mailgw.imap.config import IMAPLimits
        from mailgw.net.sessions import SessionRegistry
        h = Harness(limits=IMAPLimits(max_user_ip_sessions=2))
        h.factory.registry = SessionRegistry()
        first, second, third = h.connect(), h.connect(), h.connect()
        self.assertTrue(first.login().startswith(b"L OK"))
        self.assertTrue(second.login().startswith(b"L OK"))
        self.assertEqual(third.login(), b"L NO [LIMIT] Maximum number of connections from user+IP exceeded\r\n"
                                        b"* BYE Maximum number of connections from user+IP exceeded\r\n")
        first.proto.connectionLost(None)
        self.assertTrue(h.connect().login().startswith(b"L OK"))


class HugeSASLLineTests(unittest.SynchronousTestCase):
    """A SASL response past the 64 KiB line limit ends the exchange; the session continues."""

    def test_huge_response(self) -> None:
        """BAD Line too long for the AUTHENTICATE, then normal commands."""
        c = Harness().connect()
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(c.send(b"A" * 70000 + b"\r\n"), b"a BAD Line too long\r\n")
        self.assertEqual(c.send(b"b NOOP\r\n"), b"b OK NOOP completed.\r\n")
