"""`mailgwctl cert install`: what it refuses (one line, exit 1, nothing touched) and what it stores."""

from __future__ import annotations

import os
import stat
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.trial.unittest import SynchronousTestCase

from mailgw.net.certgen import self_signed
from mailgw.net.certs import build_csr, load_key
from tests.admin.certs_helpers import HOST, CertWorkspace, forge, new_ca


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class InstallRefusals(SynchronousTestCase):
    def setUp(self) -> None:
        self.ws = CertWorkspace(self)
        self.assertEqual(self.ws.ctl("ca", "init").code, 0)
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail", "--alt-name", "imap.example.com").code, 0)
        self.ca = self.ws.ca.load()
        self.key = self.ws.pending_public_key()
        self.names = [HOST, "imap.example.com"]

    def refused(self, cert_file: str, *extra: str) -> str:
        """Install must fail with exit 1 and exactly one stderr line, leaving no live or temporary files."""
        before = sorted(os.listdir(self.ws.path("tls")))
        result = self.ws.ctl("cert", "install", "--name", "mail", cert_file, "--no-system-ca", *extra)
        self.assertEqual(result.code, 1, result.out + result.err)
        self.assertEqual(result.err.count("\n"), 1, result.err)
        self.assertTrue(result.err.startswith("mailgwctl cert install: "), result.err)
        self.assertEqual(sorted(os.listdir(self.ws.path("tls"))), before)
        self.assertFalse(os.path.exists(self.ws.paths.cert_file))
        self.assertTrue(os.path.exists(self.ws.paths.pending_key))
        return result.err

    def test_certificate_for_another_key(self) -> None:
        """A certificate issued for a different key is refused as not matching the pending key."""
        other = ec.generate_private_key(ec.SECP256R1())
        cert = self.ws.ca.issue(build_csr(other, self.names))
        self.assertIn("does not match the pending key", self.refused(self.ws.write("other.pem", cert)))

    def test_expired(self) -> None:
        """An expired certificate for the right key and names is refused, naming the expiry date."""
        cert = forge(self.ca, self.key, self.names, days=-1, start_days=-30)
        self.assertIn("the certificate expired on", self.refused(self.ws.write("old.pem", cert)))

    def test_not_yet_valid(self) -> None:
        """A certificate whose validity starts tomorrow is refused."""
        cert = forge(self.ca, self.key, self.names, days=30, start_days=1)
        self.assertIn("is not valid before", self.refused(self.ws.write("future.pem", cert)))

    def test_another_hostname(self) -> None:
        """A certificate whose subjectAltName misses a requested name is refused, naming both."""
        cert = forge(self.ca, self.key, ["other.example.com", "imap.example.com"])
        err = self.refused(self.ws.write("other.pem", cert))
        self.assertIn("(other.example.com, imap.example.com) does not cover 'mail.example.com'", err)

    def test_missing_alt_name(self) -> None:
        """Leaving out one of the requested alternative names is refused too."""
        cert = forge(self.ca, self.key, [HOST])
        self.assertIn("does not cover 'imap.example.com' (requested)", self.refused(self.ws.write("short.pem", cert)))

    def test_without_server_auth(self) -> None:
        """clientAuth-only and no extended key usage at all are both refused."""
        client_only = forge(self.ca, self.key, self.names, usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertIn("lacks serverAuth", self.refused(self.ws.write("client.pem", client_only)))
        no_usage = forge(self.ca, self.key, self.names, usages=[])
        self.assertIn("no extended key usage", self.refused(self.ws.write("none.pem", no_usage)))

    def test_unknown_issuer(self) -> None:
        """A certificate from a CA that is neither in the chain nor trusted does not chain."""
        stranger = new_ca("Stranger CA")
        cert = forge(stranger, self.key, self.names)
        self.assertIn("does not chain to a CA", self.refused(self.ws.write("stranger.pem", cert)))

    def test_impostor_ca_with_the_same_name(self) -> None:
        """A chain CA with the issuer's name but another key fails: signatures are checked, not names."""
        real = new_ca("Corp Issuing CA")
        impostor = new_ca("Corp Issuing CA")
        cert = forge(real, self.key, self.names)
        chain = self.ws.write("impostor.pem", impostor[0])
        self.assertIn("does not chain to a CA", self.refused(self.ws.write("leaf.pem", cert), "--chain", chain))

    def test_issuer_that_is_not_a_ca(self) -> None:
        """A certificate signed by another server certificate is refused: the signer is no CA."""
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        server = forge(self.ca, leaf_key.public_key(), ["www.example.com"])
        cert = forge((server, leaf_key), self.key, self.names)
        chain = self.ws.write("chain.pem", server, self.ca[0])
        self.assertIn("is not a CA certificate", self.refused(self.ws.write("leaf.pem", cert), "--chain", chain))

    def test_path_length(self) -> None:
        """An intermediate under a pathLen 0 root breaks the root's path length limit."""
        root = new_ca("Root CA", path_length=0)
        intermediate = new_ca("Issuing CA", path_length=0, issuer=root)
        cert = forge(intermediate, self.key, self.names)
        chain = self.ws.write("chain.pem", intermediate[0], root[0])
        self.assertIn("path length limit 0", self.refused(self.ws.write("leaf.pem", cert), "--chain", chain))

    def test_self_signed(self) -> None:
        """A self-signed certificate for the pending key is not installed as CA-issued (self-sign is the lab path)."""
        cert_pem, _ = self_signed(self.names, key=load_key(self.ws.paths.pending_key))
        path = self.ws.path("self.pem")
        with open(path, "wb") as handle:
            handle.write(cert_pem)
        self.assertIn("self-signed, not issued by a CA", self.refused(path))

    def test_server_hostname_required(self) -> None:
        """A request without server.hostname yields a certificate mailgw would not load: install refuses it."""
        result = self.ws.ctl("cert", "request", "--name", "mail", "--hostname", "imap.example.com", "--force")
        self.assertIn("warning: server.hostname 'mail.example.com' is not requested", result.out)
        cert = forge(self.ca, self.ws.pending_public_key(), ["imap.example.com"])
        self.assertIn("does not cover 'mail.example.com' (server.hostname", self.refused(self.ws.write("c.pem", cert)))


class InstallStores(SynchronousTestCase):
    def setUp(self) -> None:
        self.ws = CertWorkspace(self)
        self.assertEqual(self.ws.ctl("ca", "init").code, 0)

    def request_and_issue(self, *names: str, days: str = "397") -> str:
        args = [a for n in names for a in ("--alt-name", n)]
        result = self.ws.ctl("cert", "request", "--name", "mail", "--force", *args)
        self.assertEqual(result.code, 0, result.err)
        out = self.ws.path("issued.pem")
        result = self.ws.ctl("ca", "issue", "--csr", self.ws.paths.csr_file, "--out", out, "--days", days)
        self.assertEqual(result.code, 0, result.err)
        return out

    def test_request_leaves_the_live_key_alone(self) -> None:
        """After an install, a new request writes a pending key and never touches the key in service."""
        self.assertEqual(self.ws.ctl("cert", "install", "--name", "mail", self.request_and_issue()).code, 0)
        live = open(self.ws.paths.key_file, "rb").read()
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail").code, 0)
        self.assertEqual(open(self.ws.paths.key_file, "rb").read(), live)
        self.assertNotEqual(open(self.ws.paths.pending_key, "rb").read(), live)
        self.assertEqual(mode(self.ws.paths.pending_key), 0o600)

    def test_replace_keeps_previous_pair(self) -> None:
        """A second install swaps in the new pair, keeps the old one as *.previous, and leaves no temp files."""
        self.assertEqual(self.ws.ctl("cert", "install", "--name", "mail", self.request_and_issue()).code, 0)
        old_cert, old_key = open(self.ws.paths.cert_file, "rb").read(), open(self.ws.paths.key_file, "rb").read()
        result = self.ws.ctl("cert", "install", "--name", "mail", self.request_and_issue("imap.example.com"))
        self.assertEqual(result.code, 0, result.err)
        self.assertEqual(open(self.ws.paths.cert_file + ".previous", "rb").read(), old_cert)
        self.assertEqual(open(self.ws.paths.key_file + ".previous", "rb").read(), old_key)
        self.assertEqual(mode(self.ws.paths.key_file), 0o600)
        self.assertEqual(mode(self.ws.paths.key_file + ".previous"), 0o600)
        self.assertEqual(sorted(os.listdir(self.ws.path("tls"))),
                         ["mail.key", "mail.key.previous", "mail.pem", "mail.pem.previous"])
        leaf = x509.load_pem_x509_certificates(open(self.ws.paths.cert_file, "rb").read())[0]
        self.assertIn("imap.example.com", leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                      .value.get_values_for_type(x509.DNSName))

    def test_renewal_for_the_key_in_service(self) -> None:
        """With nothing pending, a certificate for the live key is accepted and the key stays."""
        self.ws.ctl("cert", "install", "--name", "mail", self.request_and_issue())
        key = self.ws.ca.load()
        live = open(self.ws.paths.key_file, "rb").read()
        renewed = forge(key, load_key(self.ws.paths.key_file).public_key(), [HOST], days=90)
        result = self.ws.ctl("cert", "install", "--name", "mail", self.ws.write("renewed.pem", renewed, key[0]))
        self.assertEqual(result.code, 0, result.err)
        self.assertIn("unchanged", result.out)
        self.assertEqual(open(self.ws.paths.key_file, "rb").read(), live)

    def test_intermediate_chain_stored(self) -> None:
        """Leaf, intermediate and root given with --chain are verified and stored in that order."""
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail").code, 0)
        root = new_ca("Corp Root CA", path_length=1)
        intermediate = new_ca("Corp Issuing CA", path_length=0, issuer=root)
        cert = self.ws.write("leaf.pem", forge(intermediate, self.ws.pending_public_key(), [HOST]))
        refused = self.ws.ctl("cert", "install", "--name", "mail", cert, "--no-system-ca")
        self.assertIn("does not chain", refused.err)
        chain = self.ws.write("chain.pem", intermediate[0], root[0])
        result = self.ws.ctl("cert", "install", "--name", "mail", cert, "--chain", chain, "--no-system-ca")
        self.assertEqual(result.code, 0, result.err)
        self.assertIn("3 certificates, chains to CN=Corp Root CA", result.out)
        stored = x509.load_pem_x509_certificates(open(self.ws.paths.cert_file, "rb").read())
        self.assertEqual([c.subject.rfc4514_string() for c in stored],
                         ["CN=mail.example.com", "CN=Corp Issuing CA", "CN=Corp Root CA"])
        self.assertFalse(os.path.exists(self.ws.paths.pending_key))

    def test_windows_formats(self) -> None:
        """A DER .cer with a PKCS#7 (.p7b) chain, and a .p7b holding CA and leaf in any order, both install."""
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail").code, 0)
        ca = self.ws.ca.load()
        leaf = forge(ca, self.ws.pending_public_key(), [HOST])
        der = self.ws.path("mail.cer")
        with open(der, "wb") as handle:
            handle.write(leaf.public_bytes(serialization.Encoding.DER))
        p7b = self.ws.path("chain.p7b")
        with open(p7b, "wb") as handle:
            handle.write(pkcs7.serialize_certificates([ca[0]], serialization.Encoding.DER))
        result = self.ws.ctl("cert", "install", "--name", "mail", der, "--chain", p7b, "--no-system-ca", "--ca-dir", self.ws.path("none"))
        self.assertEqual(result.code, 0, result.err)
        self.assertEqual(x509.load_pem_x509_certificates(open(self.ws.paths.cert_file, "rb").read()), [leaf, ca[0]])
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail").code, 0)
        leaf = forge(ca, self.ws.pending_public_key(), [HOST])
        with open(p7b, "wb") as handle:
            handle.write(pkcs7.serialize_certificates([ca[0], leaf], serialization.Encoding.PEM))
        result = self.ws.ctl("cert", "install", "--name", "mail", p7b, "--no-system-ca", "--ca-dir", self.ws.path("none"))
        self.assertEqual(result.code, 0, result.err)
        self.assertEqual(x509.load_pem_x509_certificates(open(self.ws.paths.cert_file, "rb").read()), [leaf, ca[0]])

    def test_openssl_signed(self) -> None:
        """A certificate signed by a plain OpenSSL CA from the CSR (`x509 -req -copy_extensions`) installs."""
        self.assertEqual(self.ws.ctl("cert", "request", "--name", "mail", "--key-type", "rsa2048").code, 0)
        root, root_key, leaf = self.ws.path("root.pem"), self.ws.path("root.key"), self.ws.path("leaf.pem")
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", root_key, "-out", root,
                               "-subj", "/CN=OpenSSL Root", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
                               "-addext", "keyUsage=critical,keyCertSign"], capture_output=True, text=True)
        self.assertEqual(made.returncode, 0, made.stderr)
        signed = subprocess.run(["openssl", "x509", "-req", "-in", self.ws.paths.csr_file, "-CA", root, "-CAkey", root_key,
                                 "-copy_extensions", "copy", "-days", "90", "-out", leaf], capture_output=True, text=True)
        self.assertEqual(signed.returncode, 0, signed.stderr)
        result = self.ws.ctl("cert", "install", "--name", "mail", leaf, "--chain", root, "--no-system-ca")
        self.assertEqual(result.code, 0, result.err)
        self.assertIn("chains to CN=OpenSSL Root", result.out)
