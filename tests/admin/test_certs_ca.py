"""`mailgwctl ca init|issue`, `cert request` key types and locations, `cert self-sign`, `cert export-ca`."""

from __future__ import annotations

import datetime
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import SynchronousTestCase

from mailgw.net.certs import load_key
from tests.admin.certs_helpers import HOST, CertWorkspace, forge, openssl


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def read_certs(path: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(open(path, "rb").read())


class PrivateCATests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ws = CertWorkspace(self)

    def ok(self, *args: str):
        result = self.ws.ctl(*args)
        self.assertEqual(result.code, 0, result.out + result.err)
        return result

    def refused(self, *args: str) -> str:
        result = self.ws.ctl(*args)
        self.assertEqual(result.code, 1, result.out + result.err)
        self.assertEqual(result.err.count("\n"), 1, result.err)
        return result.err

    def test_init_makes_a_constrained_ca(self) -> None:
        """The CA is self-signed, CA:TRUE pathlen 0 and keyCertSign (both critical), key 0600 in a 0700 directory."""
        out = self.ok("ca", "init").out
        self.assertIn(f"CN=mailgw private CA ({HOST})", out)
        self.assertEqual(self.ws.ca.directory, self.ws.path("state", "ca"))
        self.assertEqual(mode(self.ws.ca.key_file), 0o600)
        self.assertEqual(mode(self.ws.ca.directory), 0o700)
        text = openssl("x509", "-in", self.ws.ca.cert_file, "-noout", "-text").stdout
        self.assertIn("X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0", text)
        self.assertIn("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign", text)
        self.assertEqual(openssl("verify", "-CAfile", self.ws.ca.cert_file, self.ws.ca.cert_file).returncode, 0)

    def test_init_refuses_to_replace_without_force(self) -> None:
        """A second `ca init` is refused (its certificates would stop being trusted); --force replaces the CA."""
        self.ok("ca", "init")
        first = open(self.ws.ca.cert_file, "rb").read()
        self.assertIn("a CA already exists", self.refused("ca", "init"))
        self.assertEqual(open(self.ws.ca.cert_file, "rb").read(), first)
        self.ok("ca", "init", "--force")
        self.assertNotEqual(open(self.ws.ca.cert_file, "rb").read(), first)

    def test_issue_copies_names_and_sets_server_auth(self) -> None:
        """An issued certificate keeps the CSR's subject and SANs (DNS and IP), has serverAuth, and verifies."""
        self.ok("ca", "init", "--ca-dir", self.ws.path("myca"))
        self.ok("cert", "request", "--name", "mail", "--alt-name", "imap.example.com,192.0.2.10")
        out = self.ws.path("issued.pem")
        self.ok("ca", "issue", "--ca-dir", self.ws.path("myca"), "--csr", self.ws.paths.csr_file, "--out", out, "--days", "10")
        leaf, ca = read_certs(out)
        self.assertEqual(ca, read_certs(self.ws.path("myca", "ca.pem"))[0])
        self.assertEqual(leaf.subject.rfc4514_string(), f"CN={HOST}")
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), [HOST, "imap.example.com"])
        self.assertEqual([str(ip) for ip in san.get_values_for_type(x509.IPAddress)], ["192.0.2.10"])
        self.assertEqual(leaf.not_valid_after_utc - leaf.not_valid_before_utc, datetime.timedelta(days=10))
        text = openssl("x509", "-in", out, "-noout", "-text").stdout
        self.assertIn("TLS Web Server Authentication", text)
        self.assertNotIn("TLS Web Client Authentication", text)
        self.assertIn("CA:FALSE", text)
        self.assertIn("Digital Signature", text)
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        self.assertEqual(aki, ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
        verified = openssl("verify", "-CAfile", self.ws.path("myca", "ca.pem"), "-purpose", "sslserver", out)
        self.assertEqual(verified.returncode, 0, verified.stdout + verified.stderr)

    def test_name_constraints(self) -> None:
        """`--permit` makes critical name constraints; issue and install refuse names outside them, as openssl does."""
        out = self.ok("ca", "init", "--permit", "example.com", "--permit", "192.0.2.0/24").out
        self.assertIn("may issue for: example.com, 192.0.2.0/24", out)
        text = openssl("x509", "-in", self.ws.ca.cert_file, "-noout", "-text").stdout
        self.assertIn("X509v3 Name Constraints: critical", text)
        self.assertIn("DNS:example.com", text)
        self.assertIn("IP:192.0.2.0/255.255.255.0", text)
        self.ok("cert", "request", "--name", "mail", "--alt-name", "192.0.2.10")
        good = self.ws.path("good.pem")
        self.ok("ca", "issue", "--csr", self.ws.paths.csr_file, "--out", good)
        self.assertEqual(openssl("verify", "-CAfile", self.ws.ca.cert_file, good).returncode, 0)
        for outside in ("www.example.org", "198.51.100.7", "example.com.evil.example"):
            self.ok("cert", "request", "--name", "mail", "--force", "--alt-name", outside)
            err = self.refused("ca", "issue", "--csr", self.ws.paths.csr_file, "--out", self.ws.path("bad.pem"))
            self.assertIn(f"{outside} is outside the CA's name constraints (example.com, 192.0.2.0/24)", err)
        forged = forge(self.ws.ca.load(), load_key(self.ws.paths.pending_key).public_key(), [HOST, "example.com.evil.example"])
        path = self.ws.write("forged.pem", forged)
        self.assertIn("permitted subtree violation", openssl("verify", "-CAfile", self.ws.ca.cert_file, path).stdout +
                      openssl("verify", "-CAfile", self.ws.ca.cert_file, path).stderr)
        err = self.refused("cert", "install", "--name", "mail", path, "--no-system-ca")
        self.assertIn("example.com.evil.example is outside the name constraints of CA", err)

    def test_no_constraints_by_default(self) -> None:
        """Without --permit the CA says it may issue for any name and has no NameConstraints extension."""
        self.assertIn("any name (no name constraints)", self.ok("ca", "init").out)
        self.assertNotIn("Name Constraints", openssl("x509", "-in", self.ws.ca.cert_file, "-noout", "-text").stdout)

    def test_issue_never_outlives_the_ca(self) -> None:
        """A 397-day certificate from a 30-day CA ends when the CA does."""
        self.ok("ca", "init", "--days", "30")
        self.ok("cert", "request", "--name", "mail")
        self.ok("ca", "issue", "--csr", self.ws.paths.csr_file, "--out", self.ws.path("c.pem"))
        leaf, ca = read_certs(self.ws.path("c.pem"))
        self.assertEqual(leaf.not_valid_after_utc, ca.not_valid_after_utc)

    def test_issue_refusals(self) -> None:
        """No CA, a CSR without subjectAltName, a tampered CSR, or a non-CSR file: exit 1 with one line each."""
        self.ok("cert", "request", "--name", "mail")
        self.assertIn("run `mailgwctl ca init` first", self.refused("ca", "issue", "--csr", self.ws.paths.csr_file, "--out", self.ws.path("x.pem")))
        self.ok("ca", "init")
        key = ec.generate_private_key(ec.SECP256R1())
        bare = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
                .sign(key, hashes.SHA256()))
        path = self.ws.path("bare.csr")
        open(path, "wb").write(bare.public_bytes(serialization.Encoding.PEM))
        self.assertIn("no subjectAltName", self.refused("ca", "issue", "--csr", path, "--out", self.ws.path("x.pem")))
        der = bytearray(x509.load_pem_x509_csr(open(self.ws.paths.csr_file, "rb").read()).public_bytes(serialization.Encoding.DER))
        der[der.index(HOST.encode())] ^= 0x01  # one bit of the signed names
        open(path, "wb").write(bytes(der))
        self.assertIn("signature does not verify", self.refused("ca", "issue", "--csr", path, "--out", self.ws.path("x.pem")))
        self.assertIn("is not a PKCS#10 certificate request", self.refused("ca", "issue", "--csr", self.ws.ca.cert_file, "--out", self.ws.path("x.pem")))
        self.assertFalse(os.path.exists(self.ws.path("x.pem")))


class RequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ws = CertWorkspace(self, server_names=["mx.example.com"])

    def test_key_types(self) -> None:
        """P-256 by default, RSA-2048 and RSA-3072 on request; openssl verifies each CSR; keys are 0600."""
        for key_type, expect in (("p256", "ASN1 OID: prime256v1"), ("rsa2048", "Public-Key: (2048 bit)"),
                                 ("rsa3072", "Public-Key: (3072 bit)")):
            args = ["cert", "request", "--name", "mail", "--force"] + (["--key-type", key_type] if key_type != "p256" else [])
            result = self.ws.ctl(*args)
            self.assertEqual(result.code, 0, result.err)
            self.assertEqual(mode(self.ws.paths.pending_key), 0o600)
            verified = openssl("req", "-verify", "-in", self.ws.paths.csr_file, "-noout")
            self.assertEqual(verified.returncode, 0, verified.stderr)
            self.assertIn(expect, openssl("req", "-in", self.ws.paths.csr_file, "-noout", "-text").stdout)

    def test_names_from_config(self) -> None:
        """Without --hostname the request names server.hostname, then --alt-name values, then tls.mail.server_names."""
        result = self.ws.ctl("cert", "request", "--name", "mail", "--alt-name", "imap.example.com")
        self.assertIn("names: mail.example.com, imap.example.com, mx.example.com", result.out)
        text = openssl("req", "-in", self.ws.paths.csr_file, "-noout", "-text").stdout
        self.assertIn("DNS:mail.example.com, DNS:imap.example.com, DNS:mx.example.com", text)
        self.assertIn("Subject: CN = mail.example.com", text)
        self.assertIn("TLS Web Server Authentication", text)

    def test_location_needs_tls_table_or_dir(self) -> None:
        """A name without [tls.NAME] is refused unless --dir says where its files go."""
        result = self.ws.ctl("cert", "request", "--name", "lab")
        self.assertEqual(result.code, 1)
        self.assertIn("no [tls.lab]", result.err)
        result = self.ws.ctl("cert", "request", "--name", "lab", "--dir", self.ws.path("labcerts"))
        self.assertEqual(result.code, 0, result.err)
        self.assertEqual(sorted(os.listdir(self.ws.path("labcerts"))), ["lab.csr", "lab.key.pending"])

    def test_names_checked(self) -> None:
        """Malformed host names are refused before any key is made; IDN names go in as A-labels, wildcards are kept."""
        for bad in ("bad name", "-x.example.com", "a..example.com", "x" * 64 + ".example.com"):
            result = self.ws.ctl("cert", "request", "--name", "mail", f"--alt-name={bad}")
            self.assertEqual(result.code, 1, bad)
            self.assertIn("is not a valid host name", result.err)
            self.assertFalse(os.path.exists(self.ws.paths.pending_key))
        result = self.ws.ctl("cert", "request", "--name", "mail", "--alt-name", "café.example", "--alt-name", "*.example.com")
        self.assertEqual(result.code, 0, result.err)
        self.assertIn("xn--caf-dma.example, *.example.com", result.out)

    def test_unwritable_location(self) -> None:
        """A location that cannot be written is one line and exit 1, not a traceback."""
        blocker = self.ws.path("blocker")
        open(blocker, "w").close()
        result = self.ws.ctl("cert", "request", "--name", "lab", "--dir", os.path.join(blocker, "tls"))
        self.assertEqual(result.code, 1)
        self.assertEqual(result.err.count("\n"), 1, result.err)
        self.assertIn("Not a directory", result.err)

    def test_second_request_refused(self) -> None:
        """A pending request is not silently thrown away: a second one needs --force."""
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail").code, 0)
        pending = open(self.ws.paths.pending_key, "rb").read()
        result = self.ws.ctl("cert", "request", "--name", "mail")
        self.assertEqual(result.code, 1)
        self.assertIn("a request is already pending", result.err)
        self.assertEqual(open(self.ws.paths.pending_key, "rb").read(), pending)


class SelfSignAndExport(SynchronousTestCase):
    def setUp(self) -> None:
        self.ws = CertWorkspace(self)

    def test_self_sign(self) -> None:
        """self-sign writes the live pair (key 0600), refuses to overwrite without --force, and exports itself."""
        result = self.ws.ctl("cert", "self-sign", "--name", "mail", "--alt-name", "localhost", "--days", "5")
        self.assertEqual(result.code, 0, result.err)
        self.assertEqual(mode(self.ws.paths.key_file), 0o600)
        self.assertIn("does match certificate", openssl("x509", "-in", self.ws.paths.cert_file, "-noout", "-checkhost", HOST).stdout)
        again = self.ws.ctl("cert", "self-sign", "--name", "mail")
        self.assertEqual(again.code, 1)
        self.assertIn("use --force", again.err)
        show = self.ws.ctl("cert", "show", "--name", "mail")
        self.assertIn("(self-signed)", show.out)
        self.assertIn("warning: tls.mail expires in 4 days", show.out)
        export = self.ws.ctl("cert", "export-ca", "--name", "mail", "--out", self.ws.path("trust.pem"))
        self.assertEqual(export.code, 0, export.err)
        self.assertEqual(read_certs(self.ws.path("trust.pem")), read_certs(self.ws.paths.cert_file))

    def test_export_needs_a_source(self) -> None:
        """export-ca without a private CA or --name, or with a chain that lacks its CA, is refused."""
        result = self.ws.ctl("cert", "export-ca", "--out", self.ws.path("out"))
        self.assertEqual(result.code, 1)
        self.assertIn("no private CA", result.err)
        self.assertEqual(self.ws.ctl("ca", "init").code, 0)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = forge(self.ws.ca.load(), leaf_key.public_key(), [HOST], usages=[ExtendedKeyUsageOID.SERVER_AUTH])
        os.makedirs(self.ws.path("tls"))
        self.ws.write(os.path.join("tls", "mail.pem"), leaf)  # leaf only: no CA in the installed file
        result = self.ws.ctl("cert", "export-ca", "--name", "mail", "--out", self.ws.path("out"))
        self.assertEqual(result.code, 1)
        self.assertIn("is not a CA certificate", result.err)
        self.assertFalse(os.path.exists(self.ws.path("out.pem")))
