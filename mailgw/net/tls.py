"""Server TLS: named certificates from PEM, mailgw's TLS policy, SNI among them, and live reload.

Policy (the seed's "Require 128-bit encryption", security.md A.7): TLS 1.2 minimum (raised per
certificate only), ECDHE with AES-GCM or ChaCha20 only, so no suite under 128 bits, no RC4, 3DES,
export, NULL, anonymous or static-RSA suites; all TLS 1.3 suites are AEAD and 128 bits or more.
Key exchange groups are X25519, P-256 and P-384 only (`GROUPS`): OpenSSL 3's TLS 1.3 default
also offers ffdhe2048, a 112-bit group (NIST SP 800-57), which "128-bit or better" excludes.
The handshake enforces it, before any greeting or credential.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from mailgw import files
from mailgw.errors import ConfigError
from mailgw.interfaces import IServerTLS

log = Logger()

CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
# Key exchange groups, in preference order, for TLS 1.3 and TLS 1.2 ECDHE alike (RFC 8446 §4.2.7).
GROUPS = ("X25519", "P-256", "P-384")
_VERSIONS = {"TLSv1.2": TLSVersion.TLSv1_2, "TLSv1.3": TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class CertificateChain:
    """A parsed, checked certificate: leaf, chain and key."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key_pem: bytes

    def dns_names(self) -> list[str]:
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return san.get_values_for_type(x509.DNSName)

    def ip_addresses(self) -> list[str]:
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]

    def covers(self, name: str) -> bool:
        """Does the SAN cover a host name or IP address (RFC 6125: one left-most wildcard label)?"""
        try:
            return str(ipaddress.ip_address(name)) in self.ip_addresses()
        except ValueError:
            pass
        name = name.lower().rstrip(".")
        for pattern in self.dns_names():
            pattern = pattern.lower().rstrip(".")
            if pattern == name:
                return True
            if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
                return True
        return False


def load_chain(cert_file: str, key_file: str, names: Iterable[str] = (), key: str = "tls",
               now: Optional[datetime.datetime] = None) -> CertificateChain:
    """Read and check a PEM chain and key; ConfigError with one line naming `key` otherwise."""
    try:
        with open(cert_file, "rb") as handle:
            certs = x509.load_pem_x509_certificates(handle.read())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}.cert_file: cannot read a PEM certificate from {cert_file!r}: {exc}") from None
    try:
        with open(key_file, "rb") as handle:
            key_pem = handle.read()
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{key}.key_file: cannot read an unencrypted PEM private key from {key_file!r}: {exc}") from None
    leaf = certs[0]
    if private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ConfigError(f"{key}.key_file: the key does not match the certificate in {cert_file!r}")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc < now:
        raise ConfigError(f"{key}.cert_file: certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    if leaf.not_valid_before_utc > now:
        raise ConfigError(f"{key}.cert_file: certificate not valid before {leaf.not_valid_before_utc:%Y-%m-%d}")
    chain = CertificateChain(leaf, tuple(certs[1:]), key_pem)
    for name in names:
        if not chain.covers(name):
            sans = ", ".join(chain.dns_names() + chain.ip_addresses()) or "none"
            raise ConfigError(f"{key}.cert_file: subjectAltName ({sans}) does not cover {name!r}")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usage:
        raise ConfigError(f"{key}.cert_file: certificate lacks serverAuth extended key usage")
    files.check_secret(key_file, f"{key}.key_file")  # the check `mailgwctl check-config` runs too
    return chain


def restrict_groups(context: SSL.Context, groups: Iterable[str] = GROUPS) -> None:
    """Limit `context`'s key exchange groups to `groups`; RuntimeError if OpenSSL refuses the list.

    pyOpenSSL 26 has no `Context.set_groups`; `SSL_CTX_set1_curves_list` is OpenSSL's name for
    `SSL_CTX_set1_groups_list` (a macro for the same ctrl), reached through cryptography's binding.
    """
    setter = getattr(context, "set_groups", None)
    if setter is not None:  # a later pyOpenSSL
        setter(list(groups))
        return
    lib = Binding.lib
    if lib.SSL_CTX_set1_curves_list(context._context, ":".join(groups).encode("ascii")) != 1:  # type: ignore[attr-defined]
        raise RuntimeError(f"OpenSSL refused the key exchange groups {':'.join(groups)}")


def certificate_options(chain: CertificateChain, min_version: str = "TLSv1.2", sni=None) -> CertificateOptions:
    """CertificateOptions with mailgw's policy; the context is built now so errors show at start-up."""
    leaf = crypto.X509.from_cryptography(chain.leaf)
    extra = [crypto.X509.from_cryptography(c) for c in chain.chain]
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, chain.key_pem)
    options = CertificateOptions(
        privateKey=key,
        certificate=leaf,
        extraCertChain=extra,
        raiseMinimumTo=_VERSIONS[min_version],
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
        contextForServerName=sni,
    )
    # Every connection (and every SNI switch, which uses another ServerTLS's context()) comes from
    # this cached context, so restricting it once covers every handshake.
    restrict_groups(options.getContext())
    return options


@implementer(IServerTLS, IOpenSSLServerConnectionCreator)
class ServerTLS:
    """One named certificate with its policy. The object itself is the (reloadable) connection creator."""

    def __init__(self, name: str, cert_file: str, key_file: str, min_version: str = "TLSv1.2",
                 names: Iterable[str] = (), registry: "Optional[TLSRegistry]" = None) -> None:
        self.name = name
        self.cert_file, self.key_file, self.min_version = cert_file, key_file, min_version
        self.names = tuple(names)
        self.registry = registry
        self.chain: CertificateChain
        self._options: CertificateOptions
        self.reload()

    def reload(self) -> None:
        self.prepare()()

    def prepare(self, cert_file: Optional[str] = None, key_file: Optional[str] = None,
                min_version: Optional[str] = None, names: Optional[Iterable[str]] = None) -> Callable[[], None]:
        """Load and check the certificate (from new paths, if given) without using it yet.

        Raises ConfigError and changes nothing if it is bad; otherwise returns a function that
        installs it, so a configuration reload can check every certificate before swapping any.
        Handshakes after the swap see the new certificate; open connections keep theirs.
        """
        cert_file = cert_file or self.cert_file
        key_file = key_file or self.key_file
        min_version = min_version or self.min_version
        names = tuple(self.names if names is None else names)
        chain = load_chain(cert_file, key_file, names, key=f"tls.{self.name}")
        options = certificate_options(chain, min_version, self._sni if self.registry else None)

        def install() -> None:
            self.cert_file, self.key_file, self.min_version, self.names = cert_file, key_file, min_version, names
            self.chain, self._options = chain, options
            self._log_loaded()

        return install

    def _log_loaded(self) -> None:
        chain = self.chain
        log.info("certificate {name} loaded: {subject}, valid until {until}", name=self.name,
                 subject=chain.leaf.subject.rfc4514_string(), until=chain.leaf.not_valid_after_utc.isoformat(),
                 event="tls.loaded")

    def context_factory(self) -> "ServerTLS":
        return self

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return self._options.serverConnectionForTLS(protocol)  # type: ignore[arg-type]

    def context(self) -> SSL.Context:
        return self._options.getContext()

    def _sni(self, server_name: Optional[bytes]) -> Optional[SSL.Context]:
        if not server_name or self.registry is None:
            return None
        name = server_name.decode("ascii", "replace")
        if self.chain.covers(name):
            return None
        other = self.registry.for_name(name)
        return other.context() if other is not None else None


class TLSRegistry:
    """All named certificates; SNI picks among them; a certificate that fails to reload keeps its old one."""

    def __init__(self) -> None:
        self.certificates: dict[str, ServerTLS] = {}

    def add(self, tls: ServerTLS) -> None:
        self.certificates[tls.name] = tls

    def get(self, name: Optional[str]) -> Optional[ServerTLS]:
        return self.certificates.get(name) if name else None

    def for_name(self, host: str) -> Optional[ServerTLS]:
        for tls in self.certificates.values():
            if tls.chain.covers(host):
                return tls
        return None

    def reload(self) -> None:
        """Reload every certificate; if one fails, ConfigError and the others keep what they had."""
        problems = []
        for tls in self.certificates.values():
            try:
                tls.reload()
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
