"""Real-socket helpers: a generated certificate, in-process IMAP listeners on 127.0.0.1:0."""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService, ListenerPolicy
from mailgw.imap.factory import IMAPServerFactory, implicit_tls_factory
from mailgw.store.memory import MemoryStore

PASSWORD = "S3cret!pw"
_CERT: dict[str, Any] = {}


def certificate() -> tuple[str, str]:
    """(cert_path, key_path) of a self-signed EC certificate for localhost / 127.0.0.1 (made once)."""
    if "paths" in _CERT:
        return _CERT["paths"]
    shared = os.environ.get("MAILGW_IMAP_TEST_CERT")  # "cert.pem:key.pem", shared with a child process
    if shared:
        cert_path, key_path = shared.split(":", 1)
        _CERT["paths"] = (cert_path, key_path)
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    d = tempfile.mkdtemp(prefix="mailgw-imap-cert-")
    cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    _CERT["paths"] = (cert_path, key_path)
    return cert_path, key_path


def FileTLS() -> Any:
    """mailgw's own TLS policy (net/tls.ServerTLS) over the generated certificate."""
    from mailgw.net.tls import ServerTLS
    cert_path, key_path = certificate()
    return ServerTLS("test", cert_path, key_path, "TLSv1.2", ("localhost",))


class LiveServer:
    """Plain (STARTTLS) and implicit-TLS listeners of one virtual server over a memory store."""

    def __init__(self, reactor: Any, require_tls: bool = True, mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
                 store: Any = None, auth: Any = None, fast: bool = True, ntlm: Any = None) -> None:
        self.reactor = reactor
        self.store = store if store is not None else MemoryStore()
        self.directory = MemoryDirectory()
        self.directory.add_user("alice", PASSWORD, ["alice@example.test"])
        self.auth = auth or AuthService([self.directory], reactor, failure_delay=0, ntlm=ntlm,
                                        listeners={"live": ListenerPolicy(mechanisms, require_tls)})
        self.tls = FileTLS()
        kw = dict(fast_message_retrieval=fast)  # require_tls and mechanisms are the auth service's
        self.plain_factory = IMAPServerFactory("live", self.auth, self.store, self.tls, reactor, **kw)
        self.tls_factory = IMAPServerFactory("live", self.auth, self.store, self.tls, reactor, implicit_tls=True, **kw)
        self.plain = reactor.listenTCP(0, self.plain_factory, interface="127.0.0.1")
        self.imaps = reactor.listenTCP(0, implicit_tls_factory(self.tls_factory), interface="127.0.0.1")

    @property
    def plain_port(self) -> int:
        return self.plain.getHost().port

    @property
    def tls_port(self) -> int:
        return self.imaps.getHost().port

    def stop(self) -> Any:
        from twisted.internet.defer import gatherResults
        return gatherResults([self.plain.stopListening(), self.imaps.stopListening()])
