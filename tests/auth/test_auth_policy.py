"""The pre-auth policy (mailgw.auth.policy): offers, TLS-first refusals and LOGIN gating, decided in one place."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailgw.auth.policy import ListenerPolicy, PreAuthPolicy, expand_mechanisms
from mailgw.errors import TLSRequired, UnknownMechanism
from mailgw.interfaces import ClientInfo

SUPPORTED = ("PLAIN", "LOGIN", "NTLM")


def client(listener: str, tls: bool, protocol: str = "imap") -> ClientInfo:
    return ClientInfo(protocol, listener, "192.0.2.1", tls=tls)


class PolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = PreAuthPolicy({"imap.secure": ListenerPolicy(("basic",), require_tls=True),
                                     "imap.legacy": ListenerPolicy(("ntlm",), require_tls=False),
                                     "submission.relay": ListenerPolicy(("plain", "login"), require_tls=True)})

    def test_expand(self) -> None:
        """`basic` is PLAIN and LOGIN; names are upper-cased, order kept, duplicates dropped."""
        self.assertEqual(expand_mechanisms(("ntlm", "basic", "plain", "Login")), ("NTLM", "PLAIN", "LOGIN"))

    def test_offered(self) -> None:
        """Nothing before TLS on a TLS-first server; NTLM in clear on the NTLM-only one; the listener's list after TLS."""
        self.assertEqual(self.policy.offered(client("secure", False), SUPPORTED), ())
        self.assertEqual(self.policy.offered(client("secure", True), SUPPORTED), ("PLAIN", "LOGIN"))
        self.assertEqual(self.policy.offered(client("legacy", False), SUPPORTED), ("NTLM",))
        self.assertEqual(self.policy.offered(client("relay", True, "smtp"), SUPPORTED), ("PLAIN", "LOGIN"))
        self.assertEqual(self.policy.offered(client("legacy", False), ("PLAIN", "LOGIN")), ())  # no NTLM acceptor

    def test_tls_refusal_comes_first(self) -> None:
        """Before TLS on a TLS-first server every name, known or not, is TLSRequired (nothing leaks in clear)."""
        for mech in ("PLAIN", "NTLM", "CRAM-MD5", ""):
            self.assertRaises(TLSRequired, self.policy.check_start, mech, client("secure", False), SUPPORTED)
        self.assertRaises(TLSRequired, self.policy.check_start, "PLAIN", client("legacy", False), SUPPORTED)
        self.assertRaises(UnknownMechanism, self.policy.check_start, "NTLM", client("secure", True), SUPPORTED)
        self.assertRaises(UnknownMechanism, self.policy.check_start, "", client("relay", True, "smtp"), SUPPORTED)
        self.policy.check_start("NTLM", client("legacy", False), SUPPORTED)

    def test_login(self) -> None:
        """LOGIN: TLSRequired before TLS (also on the NTLM-only server), UnknownMechanism under TLS without PLAIN/LOGIN."""
        self.assertRaises(TLSRequired, self.policy.check_login, client("secure", False), SUPPORTED)
        self.assertRaises(TLSRequired, self.policy.check_login, client("legacy", False), SUPPORTED)
        self.assertRaises(UnknownMechanism, self.policy.check_login, client("legacy", True), SUPPORTED)
        self.policy.check_login(client("secure", True), SUPPORTED)
        self.assertFalse(self.policy.login_allowed(client("legacy", False), SUPPORTED))
        self.assertTrue(self.policy.login_allowed(client("secure", True), SUPPORTED))

    def test_unmapped_fails_closed(self) -> None:
        """A listener no policy names (or no policies at all) gets the supported mechanisms, TLS first."""
        for policy in (self.policy, PreAuthPolicy()):
            self.assertEqual(policy.offered(client("stray", False), SUPPORTED), ())
            self.assertRaises(TLSRequired, policy.check_start, "NTLM", client("stray", False), SUPPORTED)
            self.assertEqual(policy.offered(client("stray", True), SUPPORTED), SUPPORTED)

    def test_lab_plaintext(self) -> None:
        """plaintext_without_tls allows PLAIN/LOGIN in clear only where the listener does not require TLS."""
        lab = PreAuthPolicy({"lab": ListenerPolicy(("basic",), require_tls=False),
                             "secure": ListenerPolicy(("basic",), require_tls=True)}, plaintext_without_tls=True)
        self.assertEqual(lab.offered(client("lab", False), SUPPORTED), ("PLAIN", "LOGIN"))
        lab.check_login(client("lab", False), SUPPORTED)
        self.assertRaises(TLSRequired, lab.check_login, client("secure", False), SUPPORTED)
