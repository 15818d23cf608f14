"""Shared pieces of the certificate tests: a config, mailgwctl in a subprocess or in-process, forged certificates."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailgw.cli import main as cli
from mailgw.net.certgen import san_for
from mailgw.net.certca import PrivateCA
from mailgw.net.certs import CertPaths, load_key
from tests.support.gateway import REPO, environment

HOST = "mail.example.com"
UTC = datetime.timezone.utc


def config_text(root: str, hostname: str = HOST, server_names: Iterable[str] = ()) -> str:
    names = ", ".join(f'"{n}"' for n in server_names)
    return f"""config_version = 1

[server]
hostname = "{hostname}"
state_dir = "{root}/state"

[tls.mail]
cert_file = "{root}/tls/mail.pem"
key_file = "{root}/tls/mail.key"
server_names = [{names}]

[auth.local]
users_file = "{root}/users"

[auth.ntlm]
domain = "EXAMPLE"

[imap.secure]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "mail"

[imap.legacy]
bind = ["tcp:0:interface=127.0.0.2"]
require_tls = false
auth = ["ntlm"]

[submission.relay]
bind = ["tcp:0:interface=127.0.0.1"]
tls = "mail"
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


class CertWorkspace:
    """A temporary directory with a config naming [tls.mail] under it, and ways to run mailgwctl there."""

    def __init__(self, case, hostname: str = HOST, server_names: Iterable[str] = ()) -> None:
        self.root = tempfile.mkdtemp(prefix="mailgw-certs-")
        case.addCleanup(shutil.rmtree, self.root, True)
        self.config = os.path.join(self.root, "mailgw.toml")
        with open(self.config, "w") as handle:
            handle.write(config_text(self.root, hostname, server_names))
        self.paths = CertPaths("mail", os.path.join(self.root, "tls", "mail.pem"), os.path.join(self.root, "tls", "mail.key"))
        self.ca = PrivateCA(os.path.join(self.root, "state", "ca"))

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def mailgwctl(self, *args: str) -> Result:
        """`python -m mailgw.cli ARGS` as its own process, the config given by $MAILGW_CONFIG."""
        done = subprocess.run([sys.executable, "-m", "mailgw.cli", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=60, env=environment({"MAILGW_CONFIG": self.config}))
        return Result(done.returncode, done.stdout, done.stderr)

    def ctl(self, *args: str) -> Result:
        """mailgwctl in this process (faster), the config given with --config."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(["--config", self.config, *args])
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
        return Result(code, out.getvalue(), err.getvalue())

    def pending_public_key(self):
        return load_key(self.paths.pending_key).public_key()

    def write(self, name: str, *certs: x509.Certificate) -> str:
        path = self.path(name)
        with open(path, "wb") as handle:
            for cert in certs:
                handle.write(cert.public_bytes(serialization.Encoding.PEM))
        return path


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def new_ca(cn: str, path_length: Optional[int] = 0, issuer=None):
    """(certificate, key) of a CA; self-signed unless `issuer` is a (certificate, key) pair."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name)
            .issuer_name(issuer_cert.subject if issuer_cert else name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=60))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .sign(issuer_key, hashes.SHA256()))
    return cert, key


def forge(issuer, public_key, names: list[str], days: float = 30, start_days: float = -1,
          usages: Optional[list] = None, ca: bool = False) -> x509.Certificate:
    """A certificate for `public_key` signed by `issuer` = (certificate, key), with the given faults."""
    issuer_cert, issuer_key = issuer
    now = datetime.datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
               .issuer_name(issuer_cert.subject).public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=start_days))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(san_for(names), critical=False)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if usages is None else usages
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


__all__ = ["HOST", "REPO", "CertWorkspace", "Result", "forge", "new_ca", "openssl"]
