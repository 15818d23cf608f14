"""Installing an issued certificate: key, names, validity, serverAuth and chain checks, then an atomic swap.

The checks are those `tls.load_chain` makes at start-up and on reload (so an installed certificate
always loads), plus the chain: every signature from the leaf up to a CA certificate, found in the
files given with the certificate or in the trust bundle (the private CA, --ca-file, the system store).
"""

from __future__ import annotations

import datetime
import os
import ssl
import warnings
from dataclasses import dataclass
from typing import Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailgw.errors import CertificateRefused

from .certgen import PrivateKey, commit_file, private_pem, stage_file
from .certca import describe_constraints, outside_constraints
from .certs import (CertPaths, is_ca, is_self_signed, load_certificates, load_key, names_in, now_utc,
                    pending_request, public_der)
from .tls import CertificateChain

MAX_DEPTH = 8


@dataclass(frozen=True)
class Installed:
    """What `install` stored: the leaf, the chain after it, the CA it chains to, and whether the key changed."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    anchor: x509.Certificate
    new_key: bool


def system_bundle() -> list[x509.Certificate]:
    """The host's trusted CA certificates (for certificates from public CAs), or none if unreadable."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.exists(path):
            try:
                with open(path, "rb") as handle, warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # some distributed roots have non-positive serials
                    return x509.load_pem_x509_certificates(handle.read())
            except (OSError, ValueError):
                continue
    return []


def _day(when: datetime.datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"


def check_leaf(leaf: x509.Certificate, names: Iterable[tuple[str, str]], now: datetime.datetime) -> None:
    """Validity now, every (name, why) covered by subjectAltName, serverAuth, a usable key usage."""
    if leaf.not_valid_after_utc < now:
        raise CertificateRefused(f"the certificate expired on {_day(leaf.not_valid_after_utc)}")
    if leaf.not_valid_before_utc > now:
        raise CertificateRefused(f"the certificate is not valid before {_day(leaf.not_valid_before_utc)}")
    if is_ca(leaf):
        raise CertificateRefused("the certificate is a CA certificate, not a server certificate")
    probe = CertificateChain(leaf, (), b"")
    for name, why in names:
        if not probe.covers(name):
            sans = ", ".join(names_in(leaf)) or "none"
            raise CertificateRefused(f"the certificate's subjectAltName ({sans}) does not cover {name!r}{why}")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRefused("the certificate has no extended key usage: a TLS server certificate needs serverAuth") from None
    if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
        raise CertificateRefused("the certificate lacks serverAuth extended key usage (TLS Web Server Authentication)")
    try:
        key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not key_usage.digital_signature:
        # mailgw's ciphers are ECDHE only (tls.CIPHERS): the server key signs the key exchange
        raise CertificateRefused("the certificate's key usage lacks digitalSignature, which ECDHE key exchange needs")


def _find_issuer(cert: x509.Certificate, pool: list[x509.Certificate],
                 path: list[x509.Certificate]) -> Optional[x509.Certificate]:
    for candidate in pool:
        if candidate.subject != cert.issuer or candidate in path:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except Exception:  # InvalidSignature, ValueError (name), TypeError (algorithm): not this one
            continue
        return candidate
    return None


def _check_issuer(ca: x509.Certificate, below: int, now: datetime.datetime, leaf: x509.Certificate) -> None:
    subject = ca.subject.rfc4514_string()
    try:
        leaf_names = list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        leaf_names = []
    outside = outside_constraints(ca, [entry.value for entry in leaf_names])
    if outside is not None:
        raise CertificateRefused(f"{outside} is outside the name constraints of CA {subject!r} ({describe_constraints(ca)}): "
                                 "clients would reject it")
    if not is_ca(ca):
        raise CertificateRefused(f"{subject!r} signed the chain but is not a CA certificate (no BasicConstraints CA:TRUE)")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    if constraints.path_length is not None and below > constraints.path_length:
        raise CertificateRefused(f"the chain breaks the path length limit {constraints.path_length} of CA {subject!r}")
    try:
        if not ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            raise CertificateRefused(f"CA {subject!r} may not sign certificates (key usage lacks keyCertSign)")
    except x509.ExtensionNotFound:
        pass
    if ca.not_valid_after_utc < now:
        raise CertificateRefused(f"CA certificate {subject!r} expired on {_day(ca.not_valid_after_utc)}")
    if ca.not_valid_before_utc > now:
        raise CertificateRefused(f"CA certificate {subject!r} is not valid before {_day(ca.not_valid_before_utc)}")


def chain_path(leaf: x509.Certificate, supplied: list[x509.Certificate], anchors: list[x509.Certificate],
               now: Optional[datetime.datetime] = None) -> list[x509.Certificate]:
    """[leaf, intermediates..., the CA it chains to], every signature verified; CertificateRefused otherwise."""
    now = now or now_utc()
    if is_self_signed(leaf):
        raise CertificateRefused("the certificate is self-signed, not issued by a CA (for labs: `mailgwctl cert self-sign`)")
    pool = supplied + [a for a in anchors if a not in supplied]
    path = [leaf]
    current = leaf
    for _ in range(MAX_DEPTH):
        issuer = _find_issuer(current, pool, path)
        if issuer is None:
            raise CertificateRefused(
                f"the certificate does not chain to a CA: no certificate in the chain or the trust bundle issued "
                f"{current.issuer.rfc4514_string()!r} (give the CA's certificates with --chain or --ca-file)")
        _check_issuer(issuer, len(path) - 1, now, leaf)
        path.append(issuer)
        if is_self_signed(issuer) or issuer in anchors:
            return path
        current = issuer
    raise CertificateRefused(f"the chain is longer than {MAX_DEPTH} certificates")


def install(paths: CertPaths, cert_file: str, chain_files: Iterable[str] = (), anchors: Iterable[x509.Certificate] = (),
            public_anchors: Iterable[x509.Certificate] = (), required: Iterable[tuple[str, str]] = (),
            now: Optional[datetime.datetime] = None) -> Installed:
    """Check an issued certificate against the pending request and store it where `paths` points.

    `required` are (name, why) pairs the certificate must cover beyond the request's own names
    (server.hostname, server_names). The certificate and chain are written to a temporary file and
    renamed over the live one, the key likewise (0600); the old pair is kept as `*.previous`.
    """
    now = now or now_utc()
    certs = load_certificates(cert_file)
    pending = pending_request(paths)
    leaf = _pick_leaf(certs, [pending[0]] if pending else [], paths.key_file)
    supplied = [c for c in certs if c != leaf]
    for chain_file in chain_files:
        supplied.extend(load_certificates(chain_file, "chain"))
    leaf_key = public_der(leaf.public_key())
    new_key_pem: Optional[bytes] = None
    requested: list[str] = []
    if pending is not None and public_der(pending[0].public_key()) == leaf_key:
        new_key_pem = private_pem(pending[0])
        requested = names_in(pending[1]) if pending[1] is not None else []
    elif os.path.exists(paths.key_file) and public_der(load_key(paths.key_file).public_key()) == leaf_key:
        pass  # renewed for the key in service
    elif pending is not None:
        raise CertificateRefused(f"the certificate does not match the pending key {paths.pending_key} "
                                 "(it was issued for another request or key)")
    elif os.path.exists(paths.key_file):
        raise CertificateRefused(f"the certificate does not match the key {paths.key_file}, and no request is pending")
    else:
        raise CertificateRefused(f"no request is pending for tls.{paths.name}: run `mailgwctl cert request` first")
    names = [(n, " (requested)") for n in requested] + list(required)
    check_leaf(leaf, names, now)
    anchor_list = list(anchors)
    public_list = [a for a in public_anchors if a not in anchor_list]
    path = chain_path(leaf, supplied, anchor_list + public_list, now)
    stored = path[1:]
    if path[-1] in public_list and path[-1] not in supplied:
        stored = path[1:-1]  # a public root the clients already have: do not send it
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *stored])
    _swap(paths, pem, new_key_pem)
    if new_key_pem is not None:
        for leftover in (paths.pending_key, paths.csr_file):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return Installed(leaf, tuple(stored), path[-1], new_key_pem is not None)


def _pick_leaf(certs: list[x509.Certificate], keys: list[PrivateKey], live_key: str) -> x509.Certificate:
    """The certificate for the pending (or live) key; else the first that is no CA (PKCS#7 bundles are unordered)."""
    wanted = [public_der(k.public_key()) for k in keys]
    if os.path.exists(live_key):
        wanted.append(public_der(load_key(live_key).public_key()))
    for cert in certs:
        if public_der(cert.public_key()) in wanted:
            return cert
    return next((c for c in certs if not is_ca(c)), certs[0])


def _swap(paths: CertPaths, cert_pem: bytes, key_pem: Optional[bytes]) -> None:
    """Stage everything first, then rename key before certificate (a reload in between fails and keeps the old pair)."""
    staged = []
    if key_pem is not None and os.path.exists(paths.key_file) and os.path.exists(paths.cert_file):
        with open(paths.key_file, "rb") as old_key, open(paths.cert_file, "rb") as old_cert:
            staged.append((stage_file(paths.key_file + ".previous", old_key.read(), 0o600), paths.key_file + ".previous"))
            staged.append((stage_file(paths.cert_file + ".previous", old_cert.read(), 0o644), paths.cert_file + ".previous"))
    if key_pem is not None:
        staged.append((stage_file(paths.key_file, key_pem, 0o600), paths.key_file))
    staged.append((stage_file(paths.cert_file, cert_pem, 0o644), paths.cert_file))
    for tmp, final in staged:
        commit_file(tmp, final)
