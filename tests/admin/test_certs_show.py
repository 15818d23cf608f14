"""`mailgwctl cert show`: the fields it reports, who uses a certificate, and the expiry warning."""

from __future__ import annotations

import os
import re

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import SynchronousTestCase

from mailgw.net.certgen import private_pem, write_private
from tests.admin.certs_helpers import HOST, CertWorkspace, forge


class ShowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ws = CertWorkspace(self)
        self.assertEqual(self.ws.ctl("ca", "init", "--common-name", "Corp CA").code, 0)

    def install(self, *request: str, days: str = "397") -> None:
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail", "--force", *request).code, 0)
        out = self.ws.path("issued.pem")
        self.assertEqual(self.ws.ctl("ca", "issue", "--csr", self.ws.paths.csr_file, "--out", out, "--days", days).code, 0)
        result = self.ws.ctl("cert", "install", "--name", "mail", out)
        self.assertEqual(result.code, 0, result.err)

    def show(self, *args: str) -> str:
        result = self.ws.ctl("cert", "show", *args)
        self.assertEqual(result.code, 0, result.err)
        return result.out

    def field(self, out: str, name: str) -> str:
        match = re.search(rf"^  {name}:\s+(.*)$", out, re.M)
        self.assertIsNotNone(match, out)
        return match.group(1)  # type: ignore[union-attr]

    def test_fields(self) -> None:
        """Subject, SANs, issuer, validity, days left, key type, chain and users are reported; no warning at 397 days."""
        self.install("--alt-name", "imap.example.com", "--key-type", "rsa2048")
        out = self.show("--name", "mail")
        self.assertTrue(out.startswith("tls.mail\n"), out)
        self.assertEqual(self.field(out, "subject"), f"CN={HOST}")
        self.assertEqual(self.field(out, "names"), f"{HOST}, imap.example.com")
        self.assertEqual(self.field(out, "issuer"), "CN=Corp CA")
        self.assertEqual(self.field(out, "chain"), "CN=Corp CA")
        self.assertEqual(self.field(out, "key"), "RSA 2048")
        self.assertIn(self.field(out, "days left"), ("396", "397"))
        self.assertRegex(self.field(out, "valid until"), r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")
        self.assertEqual(self.field(out, "used by"), "imap.secure (bind_tls), submission.relay (bind)")
        self.assertNotIn("legacy", out)
        self.assertNotIn("warning", out)
        self.assertNotIn("pending", out)

    def test_warning_under_30_days(self) -> None:
        """A certificate with 10 days left gets a warning line naming it and the days left."""
        self.install(days="10")
        out = self.show()
        self.assertEqual(self.field(out, "days left"), "9")
        self.assertIn("warning: tls.mail expires in 9 days", out)

    def test_expired_installed_file(self) -> None:
        """An expired certificate in place (installed by hand) is reported as expired."""
        self.install()
        key = ec.generate_private_key(ec.SECP256R1())
        old = forge(self.ws.ca.load(), key.public_key(), [HOST], days=-2, start_days=-60)
        self.ws.write("tls/mail.pem", old)
        out = self.show("--name", "mail")
        self.assertIn("warning: tls.mail expired on", out)
        self.assertTrue(self.field(out, "days left").startswith("-"))

    def test_key_file_problems(self) -> None:
        """A world-readable key, a key for another certificate, and a missing key each get a warning."""
        self.install()
        os.chmod(self.ws.paths.key_file, 0o640)  # the service's group may read it
        self.assertNotIn("warning", self.show())
        os.chmod(self.ws.paths.key_file, 0o644)
        self.assertIn(f"warning: tls.mail key file {self.ws.paths.key_file} is accessible by others (mode 0644)", self.show())
        os.chmod(self.ws.paths.key_file, 0o600)
        other = ec.generate_private_key(ec.SECP256R1())
        write_private(self.ws.paths.key_file, private_pem(other))
        out = self.show()
        self.assertIn("does not match the certificate", out)
        self.assertNotIn("has mode", out)
        os.unlink(self.ws.paths.key_file)
        self.assertIn("is missing", self.show())

    def test_not_installed_and_pending(self) -> None:
        """Before install: not installed, the users, and the pending request with its names."""
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail", "--alt-name", "imap.example.com").code, 0)
        out = self.show()
        self.assertIn("(not installed)", out)
        self.assertEqual(self.field(out, "pending"), f"{self.ws.paths.csr_file} ({HOST}, imap.example.com)")
        self.assertEqual(self.field(out, "used by"), "imap.secure (bind_tls), submission.relay (bind)")

    def test_unknown_name_and_bad_config(self) -> None:
        """An unknown certificate name exits 1; an unreadable configuration exits 78 (EX_CONFIG)."""
        result = self.ws.ctl("cert", "show", "--name", "nope")
        self.assertEqual(result.code, 1)
        self.assertIn("no [tls.nope]", result.err)
        with open(self.ws.config, "a") as handle:
            handle.write("[tls.broken\n")
        result = self.ws.ctl("cert", "show")
        self.assertEqual(result.code, 78)
        self.assertIn("TOML syntax error", result.err)
