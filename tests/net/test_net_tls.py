"""The TLS policy: TLS 1.2 floor, 128-bit-or-better AEAD ciphers only, checked certificates, SNI."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from mailgw.errors import ConfigError
from mailgw.net.tls import ServerTLS, TLSRegistry, load_chain, restrict_groups
from tests.support.certs import make_ca, make_server_cert
from tests.support.gateway import environment

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(os.path.dirname(HERE), "support", "tls_server.py")
PERMISSIVE = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
CipherString = DEFAULT@SECLEVEL=0
"""


class TLSServerProcess:
    """tls_server.py in a child process with a permissive OpenSSL config."""

    def __init__(self, case: SynchronousTestCase, min_version: str = "TLSv1.2") -> None:
        self.dir = tempfile.mkdtemp()
        case.addCleanup(shutil.rmtree, self.dir)
        self.cert = make_server_cert(self.dir, ["localhost", "127.0.0.1"])
        self.conf = os.path.join(self.dir, "openssl.cnf")
        with open(self.conf, "w") as handle:
            handle.write(PERMISSIVE)
        self.env = environment({"OPENSSL_CONF": self.conf})
        self.process = subprocess.Popen([sys.executable, SERVER, self.cert.cert_file, self.cert.key_file, min_version],
                                        stdout=subprocess.PIPE, text=True, env=self.env)
        case.addCleanup(self.stop)
        self.port = int(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()

    def s_client(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}", "-servername", "localhost",
                               "-CAfile", self.cert.ca_file, "-ign_eof", *args], input="ping\n", capture_output=True, text=True,
                              env=self.env, timeout=30)


def handshake_ok(result: subprocess.CompletedProcess) -> bool:
    return "* OK hello" in result.stdout


class HandshakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = TLSServerProcess(self)

    def test_tls12_accepted_tls11_refused(self) -> None:
        """openssl s_client completes TLS 1.2 and verifies the chain; TLS 1.1 and 1.0 fail in the handshake."""
        result = self.server.s_client("-tls1_2", "-verify_return_error")
        self.assertTrue(handshake_ok(result), result.stdout + result.stderr)
        self.assertIn("Verify return code: 0 (ok)", result.stdout)
        for old in ("-tls1_1", "-tls1"):
            result = self.server.s_client(old, "-cipher", "DEFAULT@SECLEVEL=0")
            self.assertFalse(handshake_ok(result), old)
        self.assertTrue(handshake_ok(self.server.s_client("-tls1_3")))

    def test_every_accepted_cipher_is_128_bits_or_more(self) -> None:
        """Offering each TLS 1.2 cipher alone, only AEAD suites of >= 128 bits complete a handshake."""
        listing = subprocess.run(["openssl", "ciphers", "-v", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"], capture_output=True,
                                 text=True, env=self.server.env, check=True).stdout
        accepted = []
        for line in listing.splitlines():
            fields = line.split()
            name, version = fields[0], fields[1]
            if version == "TLSv1.3":
                continue
            bits = int(re.search(r"Enc=\S+?\((\d+)\)", line).group(1)) if "(" in line else 0
            result = self.server.s_client("-tls1_2", "-cipher", f"{name}@SECLEVEL=0")
            if handshake_ok(result):
                accepted.append((name, bits, line))
        self.assertTrue(accepted, "no cipher accepted at all")
        for name, bits, line in accepted:
            self.assertGreaterEqual(bits, 128, line)
            self.assertRegex(line, r"Enc=(AESGCM|CHACHA20/POLY1305)", line)
            self.assertNotRegex(name, r"RC4|DES|NULL|EXP|ADH|AECDH|MD5")

    def test_key_exchange_groups_128_bits_or_more(self) -> None:
        """A TLS 1.3 client offering only ffdhe2048 (112-bit) is refused; X25519, P-256 and P-384 complete."""
        for weak in ("ffdhe2048", "ffdhe3072"):
            result = self.server.s_client("-tls1_3", "-groups", weak)
            self.assertFalse(handshake_ok(result), weak + result.stdout)
        self.assertFalse(handshake_ok(self.server.s_client("-tls1_3", "-groups", "P-521:X448")))
        for good in ("X25519", "P-256", "P-384"):
            result = self.server.s_client("-tls1_3", "-groups", good)
            self.assertTrue(handshake_ok(result), good + result.stdout + result.stderr)
        # TLS 1.2 (ECDHE suites only): the client's groups also bound the P-256 certificate's curve, so offer it.
        self.assertIn("Server Temp Key: X25519", self.server.s_client("-tls1_2", "-groups", "X25519:P-256").stdout)
        # With every group offered, the server's preference (X25519) wins.
        self.assertIn("Server Temp Key: X25519", self.server.s_client("-tls1_3", "-groups", "ffdhe2048:P-384:X25519").stdout)

    def test_min_version_raised(self) -> None:
        """min_version = TLSv1.3 refuses a TLS 1.2 client."""
        server = TLSServerProcess(self, "TLSv1.3")
        self.assertFalse(handshake_ok(server.s_client("-tls1_2")))
        self.assertTrue(handshake_ok(server.s_client("-tls1_3")))


def memory_handshake(server_context: SSL.Context, client_groups: str) -> str:
    """Handshake a pyOpenSSL client offering `client_groups` with `server_context` over memory BIOs; the group name."""
    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.set_min_proto_version(SSL.TLS1_3_VERSION)
    restrict_groups(client_context, client_groups.split(":"))
    client, server = SSL.Connection(client_context, None), SSL.Connection(server_context, None)
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(10):
        for one, other in ((client, server), (server, client)):
            try:
                one.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(one.bio_read(65536))
            except SSL.WantReadError:
                pass
    return server.get_cipher_name() and (Binding.ffi.string(Binding.lib.SSL_get0_group_name(server._ssl)).decode())


class GroupsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        files = make_server_cert(self.dir, ["localhost"])
        self.context = ServerTLS("t", files.cert_file, files.key_file).context()

    def test_x25519_preferred(self) -> None:
        """A client offering ffdhe2048, P-384 and X25519 gets X25519 from the server context."""
        self.assertEqual(memory_handshake(self.context, "ffdhe2048:P-384:X25519"), "x25519")

    def test_ffdhe_refused(self) -> None:
        """A client offering only FFDHE groups fails the handshake with the server context."""
        with self.assertRaises(SSL.Error):
            memory_handshake(self.context, "ffdhe2048:ffdhe3072")


class CertificateCheckTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.ca = make_ca(self.dir)

    def test_good_certificate(self) -> None:
        """A valid chain covering the host name loads."""
        files = make_server_cert(self.dir, ["mail.example.com"], ca=self.ca)
        chain = load_chain(files.cert_file, files.key_file, ["mail.example.com"])
        self.assertEqual(chain.dns_names(), ["mail.example.com"])
        self.assertEqual(len(chain.chain), 1)

    def test_key_mismatch(self) -> None:
        """A key that is not the certificate's is refused with one line naming the key."""
        one = make_server_cert(self.dir, ["a.example.com"], stem="one", ca=self.ca)
        two = make_server_cert(self.dir, ["a.example.com"], stem="two", ca=self.ca)
        with self.assertRaises(ConfigError) as caught:
            load_chain(one.cert_file, two.key_file, ["a.example.com"], key="tls.mail")
        self.assertEqual(caught.exception.problems, [f"tls.mail.key_file: the key does not match the certificate in {one.cert_file!r}"])

    def test_expired(self) -> None:
        """An expired certificate is refused."""
        files = make_server_cert(self.dir, ["a.example.com"], ca=self.ca, not_after_days=-1, not_before_days=-10)
        with self.assertRaises(ConfigError) as caught:
            load_chain(files.cert_file, files.key_file, key="tls.mail")
        self.assertIn("tls.mail.cert_file: certificate expired on", caught.exception.problems[0])

    def test_san_must_cover_hostname(self) -> None:
        """A certificate whose SAN does not cover server.hostname is refused."""
        files = make_server_cert(self.dir, ["other.example.com"], ca=self.ca)
        with self.assertRaises(ConfigError) as caught:
            load_chain(files.cert_file, files.key_file, ["mail.example.com"], key="tls.mail")
        self.assertIn("does not cover 'mail.example.com'", caught.exception.problems[0])

    def test_wildcard(self) -> None:
        """A wildcard SAN covers one label only."""
        files = make_server_cert(self.dir, ["*.example.com"], ca=self.ca)
        chain = load_chain(files.cert_file, files.key_file)
        self.assertTrue(chain.covers("mail.example.com"))
        self.assertFalse(chain.covers("a.b.example.com"))
        self.assertFalse(chain.covers("example.com"))

    def test_no_server_auth(self) -> None:
        """A certificate without serverAuth extended key usage is refused."""
        files = make_server_cert(self.dir, ["a.example.com"], ca=self.ca, server_auth=False)
        self.assertRaises(ConfigError, load_chain, files.cert_file, files.key_file)

    def test_sni_and_reload(self) -> None:
        """SNI picks the named certificate that covers the name; reload swaps in a new certificate."""
        registry = TLSRegistry()
        one = make_server_cert(self.dir, ["a.example.com"], stem="one", ca=self.ca)
        two = make_server_cert(self.dir, ["b.example.com"], stem="two", ca=self.ca)
        first = ServerTLS("one", one.cert_file, one.key_file, registry=registry)
        second = ServerTLS("two", two.cert_file, two.key_file, registry=registry)
        registry.add(first)
        registry.add(second)
        self.assertIsNone(first._sni(b"a.example.com"))
        self.assertIs(first._sni(b"b.example.com"), second.context())
        self.assertIsNone(first._sni(b"unknown.example.com"))
        before = first.chain.leaf.serial_number
        make_server_cert(self.dir, ["a.example.com"], stem="one", ca=self.ca)
        registry.reload()
        self.assertNotEqual(first.chain.leaf.serial_number, before)
        with open(one.cert_file, "w") as handle:
            handle.write("garbage")
        self.assertRaises(ConfigError, registry.reload)
        self.assertNotEqual(first.chain.leaf.serial_number, before)
        self.assertTrue(first.chain.leaf.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc))
