"""The small private CA for organisations without one: ca.pem/ca.key, issuing from a CSR, name constraints."""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailgw.errors import CertificateRefused

from .certgen import PrivateKey, generate_key, private_pem, write_private, write_public
from .certs import check_names, load_certificates, load_key, now_utc

CA_DAYS = 3650
ISSUE_DAYS = 397  # under the 398-day cap that Apple platforms and browsers put on publicly trusted server certificates


class PrivateCA:
    """A one-level CA in a directory: ca.pem (public, for clients) and ca.key (mode 0600; directory 0700)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.cert_file = os.path.join(directory, "ca.pem")
        self.key_file = os.path.join(directory, "ca.key")

    def exists(self) -> bool:
        return os.path.exists(self.cert_file)

    def init(self, common_name: str, days: int = CA_DAYS, key_type: str = "p256", force: bool = False,
             permitted: Iterable[str] = ()) -> x509.Certificate:
        """Create the CA; `permitted` domains and networks become critical name constraints (RFC 5280 §4.2.1.10)."""
        constraints = name_constraints(list(permitted)) if permitted else None
        if (os.path.exists(self.cert_file) or os.path.exists(self.key_file)) and not force:
            raise CertificateRefused(f"a CA already exists in {self.directory} (use --force to replace it: "
                                     "every certificate it issued stops being trusted)")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        key = generate_key(key_type)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = now_utc()
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=days))
                # RFC 5280 §4.2.1.9: a CA that signs only end-entity certificates
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if constraints is not None:
            # a stolen CA key then cannot impersonate other sites to the clients that trust this root
            builder = builder.add_extension(constraints, critical=True)
        cert = builder.sign(key, hashes.SHA256())
        write_private(self.key_file, private_pem(key))
        write_public(self.cert_file, cert.public_bytes(serialization.Encoding.PEM))
        return cert

    def load(self) -> tuple[x509.Certificate, PrivateKey]:
        if not self.exists():
            raise CertificateRefused(f"no CA in {self.directory}: run `mailgwctl ca init` first")
        return load_certificates(self.cert_file, "CA certificate")[0], load_key(self.key_file)

    def certificate(self) -> x509.Certificate:
        if not self.exists():
            raise CertificateRefused(f"no CA in {self.directory}: run `mailgwctl ca init` first")
        return load_certificates(self.cert_file, "CA certificate")[0]

    def issue(self, csr: x509.CertificateSigningRequest, days: int = ISSUE_DAYS,
              not_before: Optional[datetime.datetime] = None) -> x509.Certificate:
        """A server certificate for the CSR's key: its subject and subjectAltName, serverAuth only."""
        ca_cert, ca_key = self.load()
        if not csr.is_signature_valid:
            raise CertificateRefused("the request's signature does not verify")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise CertificateRefused("the request has no subjectAltName: make it with `mailgwctl cert request`") from None
        outside = outside_constraints(ca_cert, [entry.value for entry in san])
        if outside is not None:
            raise CertificateRefused(f"{outside} is outside the CA's name constraints ({describe_constraints(ca_cert)})")
        start = not_before or now_utc() - datetime.timedelta(minutes=5)
        end = min(start + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
        public = csr.public_key()
        rsa_key = isinstance(public, rsa.RSAPublicKey)
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value \
            if _has(ca_cert, x509.SubjectKeyIdentifier) else x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
        return (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
                .public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(san, critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=rsa_key,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                .sign(ca_key, hashes.SHA256()))


def name_constraints(permitted: list[str]) -> x509.NameConstraints:
    """Permitted subtrees: a domain covers itself and its subdomains; an IP network its addresses."""
    subtrees: list[x509.GeneralName] = []
    for item in permitted:
        try:
            subtrees.append(x509.IPAddress(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            subtrees.append(x509.DNSName(check_names([item.lstrip(".")])[0]))
    return x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None)


def _constraints(ca: x509.Certificate) -> Optional[x509.NameConstraints]:
    try:
        return ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def describe_constraints(ca: x509.Certificate) -> str:
    constraints = _constraints(ca)
    if constraints is None or not constraints.permitted_subtrees:
        return "none"
    return ", ".join(str(entry.value) for entry in constraints.permitted_subtrees)


def _matches(value: object, entry: x509.GeneralName) -> bool:
    if isinstance(value, str) and isinstance(entry, x509.DNSName):
        host, domain = value.lower().rstrip("."), entry.value.lower().lstrip(".")
        return host == domain or host.endswith("." + domain)
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)) and isinstance(entry, x509.IPAddress):
        network = entry.value
        return isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and \
            value.version == network.version and value in network
    return False


def outside_constraints(ca: x509.Certificate, names: Iterable[object]) -> Optional[str]:
    """The first DNS name or IP address outside the CA's permitted subtrees (or in an excluded one), else None."""
    constraints = _constraints(ca)
    if constraints is None:
        return None
    permitted, excluded = list(constraints.permitted_subtrees or []), list(constraints.excluded_subtrees or [])
    for value in names:
        if not isinstance(value, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)):
            continue
        kind = x509.DNSName if isinstance(value, str) else x509.IPAddress
        allowed = [entry for entry in permitted if isinstance(entry, kind)]
        if any(_matches(value, entry) for entry in excluded) or (allowed and not any(_matches(value, e) for e in allowed)):
            return str(value)
    return None


def _has(cert: x509.Certificate, extension: type) -> bool:
    try:
        cert.extensions.get_extension_for_class(extension)
    except x509.ExtensionNotFound:
        return False
    return True
