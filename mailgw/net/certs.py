"""X.509 for the TLS virtual servers: certificate requests (PKCS#10), a small private CA, and summaries.

The pending key of a request lives beside the live key (`<key_file>.pending`) until `install`
replaces the live pair, so a request never disturbs the certificate in service. The private CA
is in `certca`, installing and chain checks in `certinstall`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailgw.errors import CertificateRefused

from .certgen import PrivateKey, generate_key, private_pem, san_for, write_private, write_public

UTC = datetime.timezone.utc


@dataclass(frozen=True)
class CertPaths:
    """Where one named certificate ([tls.NAME]) lives, and its pending request beside it."""

    name: str
    cert_file: str
    key_file: str

    @classmethod
    def in_directory(cls, name: str, directory: str) -> "CertPaths":
        return cls(name, os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key"))

    @property
    def pending_key(self) -> str:
        return self.key_file + ".pending"

    @property
    def csr_file(self) -> str:
        return os.path.splitext(self.cert_file)[0] + ".csr"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def load_key(path: str) -> PrivateKey:
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertificateRefused(f"cannot read an unencrypted PEM private key from {path}: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertificateRefused(f"{path}: only EC and RSA keys are supported")
    return key


def load_certificates(path: str, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in a file: PEM (one or more), DER, or a PKCS#7 bundle (.p7b, as Windows CAs hand out)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CertificateRefused(f"cannot read {what} file {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN PKCS7-----" in data:
            return pkcs7.load_pem_pkcs7_certificates(data)
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            return pkcs7.load_der_pkcs7_certificates(data)
    except ValueError as exc:
        raise CertificateRefused(f"{path} holds no readable {what} (PEM, DER or PKCS#7): {exc}") from None


def load_csr(path: str) -> x509.CertificateSigningRequest:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CertificateRefused(f"cannot read the request {path}: {exc.strerror}") from None
    try:
        csr = x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CertificateRefused(f"{path} is not a PKCS#10 certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise CertificateRefused(f"{path}: the request's signature does not verify")
    return csr


def public_der(key: Any) -> bytes:
    """SubjectPublicKeyInfo DER of a public key, to compare keys."""
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def names_in(item: "x509.Certificate | x509.CertificateSigningRequest") -> list[str]:
    """The DNS names and IP addresses of a certificate's or request's subjectAltName, in order."""
    try:
        san = item.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(entry.value) for entry in san if isinstance(entry, (x509.DNSName, x509.IPAddress))]


def key_description(key: object) -> str:
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name, key.curve.name)
        return f"EC {curve}"
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"RSA {key.key_size}"
    return type(key).__name__


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # InvalidSignature, ValueError, TypeError: not self-signed
        return False
    return True


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# --- requests ----------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_names(names: list[str]) -> list[str]:
    """Host names (LDH labels, one left-most `*` allowed, RFC 6125 §6.4.3) and IP addresses, as they go in a SAN."""
    if not names:
        raise CertificateRefused("a certificate needs at least one host name")
    out = []
    for name in names:
        try:
            out.append(str(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        try:
            ascii_name = name.encode("idna").decode("ascii").lower().rstrip(".")
        except UnicodeError:
            raise CertificateRefused(f"{name!r} is not a valid host name") from None
        labels = ascii_name.split(".")
        if labels[0] == "*" and len(labels) > 2:
            labels = labels[1:]
        if len(ascii_name) > 253 or len(labels) < 1 or not all(_LABEL.match(label) for label in labels):
            raise CertificateRefused(f"{name!r} is not a valid host name")
        out.append(ascii_name)
    return out


def build_csr(key: PrivateKey, names: list[str]) -> x509.CertificateSigningRequest:
    """A PKCS#10 request: CN = the first name, every name in subjectAltName, serverAuth asked for."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(san_for(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))


def make_request(paths: CertPaths, names: list[str], key_type: str = "p256",
                 force: bool = False) -> x509.CertificateSigningRequest:
    """New pending key (mode 0600) and CSR for `paths`; the live key is not touched."""
    names = check_names(names)
    if os.path.exists(paths.pending_key) and not force:
        raise CertificateRefused(f"a request is already pending ({paths.pending_key}): install its certificate, "
                                 "or use --force to replace it")
    key = generate_key(key_type)
    csr = build_csr(key, names)
    write_private(paths.pending_key, private_pem(key))
    write_public(paths.csr_file, csr.public_bytes(serialization.Encoding.PEM))
    return csr


def pending_request(paths: CertPaths) -> Optional[tuple[PrivateKey, Optional[x509.CertificateSigningRequest]]]:
    """(pending key, its CSR if still there), or None when nothing is pending."""
    if not os.path.exists(paths.pending_key):
        return None
    key = load_key(paths.pending_key)
    csr = load_csr(paths.csr_file) if os.path.exists(paths.csr_file) else None
    if csr is not None and public_der(csr.public_key()) != public_der(key.public_key()):
        csr = None  # a CSR from another request: its names are not this key's
    return key, csr


def self_sign(paths: CertPaths, names: list[str], key_type: str = "p256", days: int = 825,
              force: bool = False) -> x509.Certificate:
    """A self-signed certificate written straight to the live files (labs); refuses to replace one without force."""
    from .certgen import self_signed

    names = check_names(names)
    if os.path.exists(paths.cert_file) and not force:
        raise CertificateRefused(f"{paths.cert_file} exists: use --force to replace it with a self-signed certificate")
    cert_pem, key_pem = self_signed(names, days, generate_key(key_type))
    write_private(paths.key_file, key_pem)
    write_public(paths.cert_file, cert_pem)
    return x509.load_pem_x509_certificate(cert_pem)


# --- summaries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What `mailgwctl cert show` reports about an installed certificate file."""

    subject: str
    names: tuple[str, ...]
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    key_type: str
    chain: tuple[str, ...]
    self_signed: bool
    fingerprint: str

    def days_left(self, now: Optional[datetime.datetime] = None) -> int:
        return (self.not_after - (now or now_utc())).days


def summarise(certs: list[x509.Certificate]) -> Summary:
    leaf = certs[0]
    return Summary(leaf.subject.rfc4514_string(), tuple(names_in(leaf)), leaf.issuer.rfc4514_string(),
                   leaf.not_valid_before_utc, leaf.not_valid_after_utc, key_description(leaf.public_key()),
                   tuple(c.subject.rfc4514_string() for c in certs[1:]), is_self_signed(leaf), fingerprint(leaf))
