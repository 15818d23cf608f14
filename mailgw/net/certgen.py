"""Generated keys, atomic key/certificate files and self-signed certificates (development default, labs)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailgw import files

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
KEY_TYPES = ("p256", "p384", "rsa2048", "rsa3072")


def generate_key(key_type: str = "p256") -> PrivateKey:
    """A new private key: P-256 (default), P-384, RSA-2048 or RSA-3072."""
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa2048", "rsa3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise ValueError(f"unknown key type {key_type!r} (one of: {', '.join(KEY_TYPES)})")


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def stage_file(path: str, data: bytes, mode: int = 0o600) -> str:
    """Stage `data` beside `path` (fsynced); `mode` 0600 marks a secret. Owner and mode per mailgw.files."""
    files.ensure_directory(os.path.dirname(os.path.abspath(path)))
    return files.stage(path, data, secret=not mode & 0o044, new_mode=mode)


def commit_file(tmp: str, path: str) -> None:
    """Rename a staged file into place (atomic on one filesystem) and fsync the directory."""
    files.commit(tmp, path)


def write_private(path: str, data: bytes) -> None:
    """Write a secret file (new: 0600, or 0640 in a directory shared with the service's group), atomically."""
    commit_file(stage_file(path, data, 0o600), path)


def write_public(path: str, data: bytes) -> None:
    """Write a certificate or request (new: mode 0644) atomically."""
    commit_file(stage_file(path, data, 0o644), path)


def san_for(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def self_signed(names: list[str], days: int = 825, key: Optional[PrivateKey] = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed server certificate for `names` (a new P-256 key by default)."""
    key = key or generate_key("p256")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(san_for(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), private_pem(key)


def ensure_self_signed(cert_file: str, key_file: str, names: list[str]) -> bool:
    """Create a self-signed certificate unless both files exist; True if one was made."""
    if os.path.exists(cert_file) and os.path.exists(key_file):
        return False
    cert_pem, key_pem = self_signed(names)
    write_private(key_file, key_pem)
    write_public(cert_file, cert_pem)
    return True
