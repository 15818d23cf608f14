"""The installed certificate on the real IMAPS port of `twistd -n mailgw` (skipped until the IMAP server is merged).

mailgwctl (its own processes) runs the procedure, tests/support/gateway.py starts the gateway with
the configuration naming the installed files, and Python's ssl with service_identity connects.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any

import service_identity.cryptography
from cryptography import x509
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.admin.certs_helpers import HOST, CertWorkspace
from tests.support.gateway import Gateway

PASSWORD = "Corr3ct-horse"
CONFIG = """config_version = 1

[server]
hostname = "{host}"
state_dir = "{root}/state"

[tls.mail]
cert_file = "{root}/tls/mail.pem"
key_file = "{root}/tls/mail.key"

[auth]
backends = ["local"]
failure_delay = "0s"

[auth.local]
users_file = "{root}/users"

[imap.secure]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "mail"
auth = ["basic"]
"""


def probe(port: int, cafile: str, hostname: str) -> bytes:
    """The IMAP greeting over TLS, trusting only `cafile` and checking `hostname` (ssl, then service_identity)."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            service_identity.cryptography.verify_certificate_hostname(x509.load_der_x509_certificate(der), hostname)
            return tls.recv(1024)


class GatewayIMAPS(TestCase):
    timeout = 120

    def setUp(self) -> None:
        from mailgw.auth.usersfile import LocalUser, format_users, hash_password

        self.ws = CertWorkspace(self)
        with open(self.ws.config, "w") as handle:
            handle.write(CONFIG.format(host=HOST, root=self.ws.root))
        fd = os.open(self.ws.path("users"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, format_users([LocalUser("alice", hash_password(PASSWORD, "bcrypt"), (f"alice@{HOST}",))]).encode())
        os.close(fd)

    def test_imaps_port_serves_installed_certificate(self) -> Any:
        """After request, issue, install and export, the gateway's IMAPS port verifies against only the exported CA."""
        ws = self.ws
        for step in (("ca", "init"), ("cert", "request", "--name", "mail"),
                     ("ca", "issue", "--csr", ws.paths.csr_file, "--out", ws.path("issued.pem")),
                     ("cert", "install", "--name", "mail", ws.path("issued.pem")),
                     ("cert", "export-ca", "--out", ws.path("ca-export"))):
            result = ws.mailgwctl(*step)
            self.assertEqual(result.code, 0, f"{step}: {result.err}")
        gateway = Gateway(ws.config, ws.root)
        self.addCleanup(gateway.stop)
        gateway.start(expect=0)
        deadline = time.monotonic() + 60
        while "imap.secure.bind_tls[0]" not in gateway.ports:
            out = "".join(gateway.output)
            if "no store or credential checker assembled" in out:
                self.fail("assemble.py did not wire the IMAP server:\n" + out)
            if (gateway.process is not None and gateway.process.poll() is not None) or time.monotonic() > deadline:
                self.fail("gateway did not bind imap.secure.bind_tls[0]:\n" + out)
            time.sleep(0.05)
        port = gateway.port("imap.secure.bind_tls[0]")
        other = ws.path("other-ca.pem")
        with open(other, "wb") as handle:  # a CA with the same name but another key
            from tests.support.certs import make_ca
            _, _, made = make_ca(ws.path(), cn=ws.ca.certificate().subject.rfc4514_string()[3:])
            handle.write(open(made, "rb").read())

        def check() -> None:
            self.assertTrue(probe(port, ws.path("ca-export.pem"), HOST).startswith(b"* OK"))
            self.assertRaises(ssl.SSLCertVerificationError, probe, port, other, HOST)
            self.assertRaises(ssl.SSLCertVerificationError, probe, port, ws.path("ca-export.pem"), "www.example.com")

        return deferToThread(check)
