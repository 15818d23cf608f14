"""Ordinary directory conditions are one log line: an address two LDAP entries share is a 451, never a traceback."""

from __future__ import annotations

import os
import smtplib
import ssl
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.errors import AuthUnavailable
from mailgw.observe.failures import log_failure
from tests.admin.helpers_ops import port_of, start_gateway, tempdir, write_config
from tests.support.certs import make_server_cert

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
from ldap_fixture import SlapdFixture, available  # noqa: E402

CONFIG = """[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth]
backends = ["ldap.corp"]
failure_delay = "0s"
[auth.ldap.corp]
urls = ["{url}"]
ca_file = "{ca}"
bind_dn = "{bind_dn}"
bind_password_file = "{secret}"
user_base = "{user_base}"
timeout = "3s"
[submission.t]
bind = ["tcp:0:interface=127.0.0.1"]
tls = "t"
local_domains = ["example.test"]
"""


def loud(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with a traceback or at error/critical level."""
    return [e for e in events if e.get("log_failure") is not None or e.get("isError")
            or e.get("log_level") in (LogLevel.error, LogLevel.critical)]


class SharedAddressTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if not available():
            self.skipTest("slapd is not installed")
        self.slapd = SlapdFixture(tls=True).start()
        self.addCleanup(self.slapd.stop)
        keys = tempdir(self)
        self.cert = make_server_cert(keys, ["mail.example.test", "127.0.0.1"])
        secret = os.path.join(keys, "ldap.secret")
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(self.slapd.bind_password)
        path, _ = write_config(self, 'hostname = "mail.example.test"\n' + CONFIG.format(
            cert=self.cert.cert_file, key=self.cert.key_file, url=self.slapd.ldaps_url, ca=self.slapd.ca_file,
            bind_dn=self.slapd.bind_dn, secret=secret, user_base=self.slapd.user_base))
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.port = port_of(start_gateway(self, path), "submission.t.bind[0]")

    @defer.inlineCallbacks
    def test_shared_address_is_451_and_one_warning(self):
        """RCPT TO an address eve and frank share gets 451 4.3.0; the log has one warning naming the cause, no traceback."""
        context = ssl.create_default_context(cafile=self.cert.ca_file)

        def submit() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as client:
                client.starttls(context=context)
                client.login("alice", "S3cret!")
                client.mail("alice@example.test")
                return client.rcpt("shared@example.test"), client.rcpt("bob@example.test")

        shared, bob = yield deferToThread(submit)
        self.assertEqual(shared[0], 451, shared)
        self.assertIn(b"4.3.0", shared[1])
        self.assertEqual(bob[0], 250, bob)
        self.assertEqual(loud(self.events), [])
        lines = [e for e in self.events if e.get("event") == "smtp.lookup_failed"]
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(lines[0]["log_level"], LogLevel.warn)
        self.assertIn("2 entries match", lines[0]["detail"])

    @defer.inlineCallbacks
    def test_shared_login_is_454_and_one_warning(self):
        """AUTH as the shared address is 454 4.7.0 (temporary), logged as one auth_failed warning, no traceback."""
        context = ssl.create_default_context(cafile=self.cert.ca_file)

        def submit() -> int:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as client:
                client.starttls(context=context)
                client.ehlo()
                client.user, client.password = "shared@example.test", "eve-pw"
                try:
                    client.auth("PLAIN", client.auth_plain)
                except smtplib.SMTPAuthenticationError as exc:
                    return exc.smtp_code
                return 235

        self.assertEqual((yield deferToThread(submit)), 454)
        self.assertEqual(loud(self.events), [])
        self.assertEqual([e["log_level"] for e in self.events if e.get("event") == "auth_failed"], [LogLevel.warn])


class LogFailureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_expected_error_is_one_line(self) -> None:
        """A MailError (an expected condition) is logged as one warning with its detail and no traceback."""
        from twisted.logger import Logger
        log_failure(Logger(), Failure(AuthUnavailable(detail="ldap x: 2 entries match the login")), "lookup failed",
                    event="t.lookup")
        [event] = [e for e in self.events if e.get("event") == "t.lookup"]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertNotIn("log_failure", event)
        self.assertEqual(event["detail"], "ldap x: 2 entries match the login")

    def test_bug_keeps_its_traceback(self) -> None:
        """Any other exception (a bug) is still logged with its traceback, at critical level."""
        from twisted.logger import Logger
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        log_failure(Logger(), failure, "lookup failed", event="t.bug")
        [event] = [e for e in self.events if e.get("event") == "t.bug"]
        self.assertEqual(event["log_level"], LogLevel.critical)
        self.assertIs(event["log_failure"], failure)
        self.flushLoggedErrors(ZeroDivisionError)
