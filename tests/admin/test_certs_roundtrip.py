"""The certificate procedure end to end through the real `mailgwctl` processes, then real TLS clients.

ca init -> cert request -> ca issue -> cert install -> cert export-ca, each as `python -m
mailgw.cli` with $MAILGW_CONFIG; openssl checks the request and the certificates; then the
installed files are served by mailgw.net.tls.ServerTLS on a ListenerService (the IMAP server is
not on main yet, so this is the same TLS wrapper the IMAPS port uses, on 127.0.0.1 port 0) and
Twisted TLS clients with service_identity hostname checks connect: trusting only the exported CA
works; trusting another CA, or asking for another host name, fails verification.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Optional

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_ASN1
from service_identity import VerificationError
from twisted.internet import defer, reactor
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mailgw.net.listen import ListenerService
from mailgw.net.tls import ServerTLS
from tests.admin.certs_helpers import HOST, CertWorkspace, openssl
from tests.support.certs import make_ca


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"* OK [CAPABILITY IMAP4rev1] mailgw ready\r\n")


class GreetingClient(Protocol):
    """Fires `done` with the greeting, or fails with why the connection ended without one."""

    def __init__(self) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.data = b""
        self.peer: x509.Certificate

    def dataReceived(self, data: bytes) -> None:
        if not self.data:
            self.peer = self.transport.getPeerCertificate().to_cryptography()
        self.data += data
        if b"\r\n" in self.data:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.data:
            self.done.callback(self.data)
        else:
            self.done.errback(reason)


class Procedure(TestCase):
    """setUp runs the procedure and serves the installed certificate on 127.0.0.1 (no tests here)."""

    timeout = 60

    def run_tool(self, *args: str):
        return self.ws.ctl(*args)

    def setUp(self) -> defer.Deferred:
        self.ws = CertWorkspace(self)
        ws = self.ws
        steps = [
            ("ca", "init", "--common-name", "Example Mail CA"),
            ("cert", "request", "--name", "mail", "--alt-name", "imap.example.com", "--alt-name", "127.0.0.1"),
            ("ca", "issue", "--csr", ws.paths.csr_file, "--out", ws.path("issued.pem"), "--days", "90"),
            ("cert", "install", "--name", "mail", ws.path("issued.pem")),
            ("cert", "export-ca", "--out", ws.path("export", "example-ca")),
        ]
        self.outputs = {}
        for step in steps:
            if step[1] == "install":
                self.before_install()
            result = self.run_tool(*step)
            self.assertEqual(result.code, 0, f"{step}: {result.out}{result.err}")
            self.outputs[step[:2]] = result.out
        self.tls = tls = ServerTLS("mail", ws.paths.cert_file, ws.paths.key_file, names=[HOST])
        self.listener = ListenerService(reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(Greeter),
                                        tls.context_factory(), "imap.secure.bind_tls[0]")
        self.listener.privilegedStartService()
        self.listener.startService()
        self.addCleanup(self.listener.stopService)
        return self.listener.listening.addCallback(lambda port: setattr(self, "port", port.getHost().port))

    def before_install(self) -> None:
        pass

    def check_request_and_issue(self) -> None:
        """Between issue and install: openssl accepts the CSR and the issued certificate."""
        ws = self.ws
        self.assertEqual(mode(ws.paths.pending_key), 0o600)
        self.assertFalse(os.path.exists(ws.paths.key_file))
        verified = openssl("req", "-verify", "-in", ws.paths.csr_file, "-noout")
        self.assertEqual(verified.returncode, 0, verified.stderr)
        text = openssl("req", "-in", ws.paths.csr_file, "-noout", "-text").stdout
        self.assertIn("DNS:mail.example.com, DNS:imap.example.com, IP Address:127.0.0.1", text)
        self.assertIn("ASN1 OID: prime256v1", text)
        chain = openssl("verify", "-CAfile", ws.ca.cert_file, "-purpose", "sslserver", ws.path("issued.pem"))
        self.assertEqual(chain.returncode, 0, chain.stdout + chain.stderr)
        for host in (HOST, "imap.example.com"):
            self.assertIn("does match certificate", openssl("x509", "-in", ws.path("issued.pem"), "-noout", "-checkhost", host).stdout)
        self.assertIn("does NOT match", openssl("x509", "-in", ws.path("issued.pem"), "-noout", "-checkhost", "www.example.com").stdout)
        self.assertEqual(openssl("x509", "-in", ws.path("issued.pem"), "-noout", "-checkip", "127.0.0.1").stdout.count("does match"), 1)

    def connect(self, hostname: str, trust_pem: bytes, client: Optional[GreetingClient] = None) -> defer.Deferred:
        options = optionsForClientTLS(hostname, trustRoot=Certificate.loadPEM(trust_pem))
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", self.port, options)
        client = client or GreetingClient()
        return connectProtocol(endpoint, client).addCallback(lambda _: client.done)



class Served(Procedure):
    """The procedure run through mailgwctl in this process (fast), then TLS clients."""

    @defer.inlineCallbacks
    def test_client_trusting_exported_ca_connects(self):
        """A client that trusts only the exported CA completes the handshake and verifies mail.example.com."""
        trust = open(self.ws.path("export", "example-ca.pem"), "rb").read()
        greeting = yield self.connect(HOST, trust)
        self.assertTrue(greeting.startswith(b"* OK "))
        greeting = yield self.connect("imap.example.com", trust)
        self.assertTrue(greeting.startswith(b"* OK "))

    @defer.inlineCallbacks
    def test_client_trusting_another_ca_fails(self):
        """A client that trusts a different CA rejects the server's chain: no greeting."""
        _, _, other = make_ca(self.ws.path(), cn="Example Mail CA")
        error = yield self.assertFailure(self.connect(HOST, open(other, "rb").read()), SSL.Error)
        self.assertIn("certificate verify failed", str(error))

    @defer.inlineCallbacks
    def test_wrong_hostname_fails(self):
        """With the right CA but a name the certificate lacks, service_identity refuses the connection."""
        trust = open(self.ws.path("export", "example-ca.pem"), "rb").read()
        error = yield self.assertFailure(self.connect("www.example.com", trust), VerificationError)
        self.assertIn("www.example.com", str(error))

    @defer.inlineCallbacks
    def test_reinstall_then_reload(self):
        """A second request and install is served by the same listener once its certificate reloads (what SIGHUP does)."""
        trust = open(self.ws.path("export", "example-ca.pem"), "rb").read()
        first = GreetingClient()
        yield self.connect(HOST, trust, first)
        for step in (("cert", "request", "--name", "mail", "--alt-name", "imap2.example.com"),
                     ("ca", "issue", "--csr", self.ws.paths.csr_file, "--out", self.ws.path("second.pem")),
                     ("cert", "install", "--name", "mail", self.ws.path("second.pem"))):
            result = self.run_tool(*step)
            self.assertEqual(result.code, 0, result.err)
        still = GreetingClient()
        yield self.connect(HOST, trust, still)
        self.assertEqual(still.peer, first.peer)
        self.tls.reload()
        second = GreetingClient()
        yield self.connect("imap2.example.com", trust, second)
        self.assertNotEqual(second.peer, first.peer)
        self.assertEqual(second.peer, x509.load_pem_x509_certificates(open(self.ws.paths.cert_file, "rb").read())[0])


class RoundTrip(Procedure):
    """The same procedure through real `python -m mailgw.cli` processes, checked with openssl."""

    def run_tool(self, *args: str):
        return self.ws.mailgwctl(*args)

    def before_install(self) -> None:
        self.check_request_and_issue()

    @defer.inlineCallbacks
    def test_round_trip(self):
        """Files have the right modes, openssl accepts each artefact, `show` reports it, and a client trusting the export connects."""
        self.check_files_and_modes()
        self.check_show()
        trust = open(self.ws.path("export", "example-ca.cer"), "rb").read()
        greeting = yield self.connect(HOST, Certificate.load(trust, FILETYPE_ASN1).dumpPEM())
        self.assertTrue(greeting.startswith(b"* OK "))

    def check_files_and_modes(self) -> None:
        """Keys are 0600, the CA directory 0700, the request is consumed, and the exports are one CA certificate."""
        ws = self.ws
        self.assertEqual(mode(ws.paths.key_file), 0o600)
        self.assertEqual(mode(ws.ca.key_file), 0o600)
        self.assertEqual(mode(ws.ca.directory), 0o700)
        self.assertFalse(os.path.exists(ws.paths.pending_key))
        self.assertIn("reload mailgw", self.outputs[("cert", "install")])
        pem = x509.load_pem_x509_certificate(open(ws.path("export", "example-ca.pem"), "rb").read())
        der = x509.load_der_x509_certificate(open(ws.path("export", "example-ca.cer"), "rb").read())
        self.assertEqual(pem, der)
        self.assertEqual(pem, x509.load_pem_x509_certificate(open(ws.ca.cert_file, "rb").read()))
        text = openssl("x509", "-in", ws.path("export", "example-ca.cer"), "-inform", "DER", "-noout", "-text").stdout
        self.assertIn("CA:TRUE, pathlen:0", text)
        self.assertIn("Certificate Sign", text)
        self.assertIn("Subject: CN = Example Mail CA", text)

    def check_show(self) -> None:
        """`cert show` (its own process) reports the installed certificate and the virtual servers using it."""
        result = self.ws.mailgwctl("cert", "show", "--name", "mail")
        self.assertEqual(result.code, 0, result.err)
        self.assertIn("issuer:       CN=Example Mail CA", result.out)
        self.assertIn("names:        mail.example.com, imap.example.com, 127.0.0.1", result.out)
        self.assertIn("used by:      imap.secure (bind_tls), submission.relay (bind)", result.out)
        self.assertRegex(result.out, re.compile(r"days left:    (89|90)\n"))
        self.assertNotIn("warning", result.out)
