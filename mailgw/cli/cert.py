"""`mailgwctl cert request|install|self-sign|show|export-ca` and `mailgwctl ca init|issue`: arguments and output.

The X.509 work is in mailgw.net.certs and mailgw.net.certinstall. These commands load the
configuration with the one parser but without file existence checks (`check_files=False`), since
the certificate and key files a start-up load insists on are what they are about to create.
Exit codes: 0 done, 1 refused (one line on stderr naming the problem), 78 unreadable configuration.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailgw import files
from mailgw.cli.settings import EX_CONFIG, config_path, load_effective_config
from mailgw.errors import CertificateRefused, ConfigError
from mailgw.net import certinstall
from mailgw.net.certgen import KEY_TYPES, write_public
from mailgw.net.certca import CA_DAYS, ISSUE_DAYS, PrivateCA, describe_constraints
from mailgw.net.certs import (CertPaths, fingerprint, is_ca, is_self_signed,
                              key_description, load_certificates, load_csr, load_key, make_request, names_in,
                              now_utc, pending_request, public_der, self_sign, summarise)

WARN_DAYS = 30


@dataclass(frozen=True)
class CertSettings:
    """The parts of the configuration certificates need."""

    source: str
    hostname: str = "localhost"
    state_dir: str = "./mailgw-state"
    tls: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)  # name -> cert, key, server_names
    users: dict[str, list[str]] = field(default_factory=dict)  # tls name -> ["imap.secure (bind_tls)", ...]


def read_settings(args: argparse.Namespace) -> CertSettings:
    """The certificate parts of the configuration, loaded by the one config parser without file checks."""
    config = load_effective_config(args, check_files=False)
    tls = {name: (cert.cert_file, cert.key_file, cert.server_names) for name, cert in config.tls.items()}
    users: dict[str, list[str]] = {}
    for kind, servers in (("imap", config.imap), ("submission", config.submission)):
        for name, server in servers.items():
            if server.tls:
                ports = [key for key in ("bind", "bind_tls") if getattr(server, key)]
                users.setdefault(server.tls, []).append(f"{kind}.{name} ({', '.join(ports) or 'no listeners'})")
    return CertSettings(config_path(args) or "the embedded development default", config.server.hostname,
                        config.server.state_dir, tls, users)


def _paths(args: argparse.Namespace, settings: CertSettings) -> CertPaths:
    if getattr(args, "dir", None):
        return CertPaths.in_directory(args.name, args.dir)
    if args.name in settings.tls:
        cert_file, key_file, _ = settings.tls[args.name]
        if os.path.abspath(cert_file) == os.path.abspath(key_file):
            raise CertificateRefused(f"tls.{args.name}: cert_file and key_file are the same file; "
                                     "give the key its own file (mode 0600)")
        return CertPaths(args.name, cert_file, key_file)
    raise CertificateRefused(f"no [tls.{args.name}] in {settings.source}: add one with cert_file and key_file, or give --dir")


def _required(name: str, settings: CertSettings) -> list[tuple[str, str]]:
    """Names mailgw's start-up check (assemble.build_tls) demands of certificate `name`."""
    if name not in settings.tls:
        return []
    return [(settings.hostname, " (server.hostname, required of every certificate)")] + \
        [(n, f" (tls.{name}.server_names)") for n in settings.tls[name][2]]


def _names(args: argparse.Namespace, settings: CertSettings) -> list[str]:
    names: list[str] = []
    extra = settings.tls[args.name][2] if args.name in settings.tls else ()
    for value in [args.hostname or settings.hostname, *(args.alt_name or []), *extra]:
        for item in value.split(","):
            if item.strip() and item.strip().lower() not in [n.lower() for n in names]:
                names.append(item.strip())
    return names


def _ca(args: argparse.Namespace, settings: CertSettings) -> PrivateCA:
    return PrivateCA(getattr(args, "ca_dir", None) or os.path.join(settings.state_dir, "ca"))


def _mode(path: str) -> str:
    return f"{os.stat(path).st_mode & 0o777:04o}"


def _day(when: datetime.datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"


# --- commands ------------------------------------------------------------------------------


def cmd_request(args: argparse.Namespace, settings: CertSettings) -> int:
    paths = _paths(args, settings)
    names = _names(args, settings)
    csr = make_request(paths, names, args.key_type, args.force)
    print(f"new {key_description(csr.public_key())} key: {paths.pending_key} (mode {_mode(paths.pending_key)}; the key in service is unchanged)")
    print(f"request (PKCS#10): {paths.csr_file}")
    print(f"names: {', '.join(names_in(csr))}")
    if args.name in settings.tls and settings.hostname.lower() not in [n.lower() for n in names]:
        print(f"warning: server.hostname {settings.hostname!r} is not requested; mailgw refuses a certificate without it")
    print("next: have your CA sign it (or `mailgwctl ca issue --csr REQUEST --out CERT.pem`), then "
          f"`mailgwctl cert install --name {args.name} CERT.pem [--chain CHAIN.pem]`")
    return 0


def cmd_install(args: argparse.Namespace, settings: CertSettings) -> int:
    paths = _paths(args, settings)
    anchors: list[x509.Certificate] = []
    ca = _ca(args, settings)
    if ca.exists():
        anchors.append(ca.certificate())
    for path in args.ca_file or []:
        anchors.extend(load_certificates(path, "CA"))
    public = [] if args.no_system_ca else certinstall.system_bundle()
    done = certinstall.install(paths, args.certificate, args.chain or [], anchors, public, _required(args.name, settings))
    leaf = done.leaf
    print(f"installed tls.{args.name}: {leaf.subject.rfc4514_string()}, issued by {leaf.issuer.rfc4514_string()}, "
          f"valid until {_day(leaf.not_valid_after_utc)}")
    print(f"names: {', '.join(names_in(leaf))}")
    print(f"certificate and chain: {paths.cert_file} ({1 + len(done.chain)} certificates, "
          f"chains to {done.anchor.subject.rfc4514_string()})")
    print(f"key: {paths.key_file} (mode {_mode(paths.key_file)}, {'the requested key' if done.new_key else 'unchanged'})")
    print("reload mailgw to serve it: `systemctl reload mailgw` or `kill -HUP <pid>` (SIGHUP)")
    return 0


def cmd_self_sign(args: argparse.Namespace, settings: CertSettings) -> int:
    paths = _paths(args, settings)
    cert = self_sign(paths, _names(args, settings), args.key_type, args.days, args.force)
    print(f"self-signed certificate for {', '.join(names_in(cert))}: {paths.cert_file}, key {paths.key_file} (mode {_mode(paths.key_file)})")
    print(f"valid until {_day(cert.not_valid_after_utc)}; SHA-256 fingerprint {fingerprint(cert)}")
    print(f"clients must trust this certificate itself: `mailgwctl cert export-ca --name {args.name}`")
    return 0


def _key_warnings(name: str, paths: CertPaths, leaf: x509.Certificate) -> list[str]:
    """The key file must exist, match the certificate and be private (what start-up would refuse or warn about)."""
    if not os.path.exists(paths.key_file):
        return [f"warning: tls.{name} key file {paths.key_file} is missing"]
    try:
        key = load_key(paths.key_file)
    except CertificateRefused as exc:
        return [f"warning: tls.{name}: {exc}"]
    out = []
    if public_der(key.public_key()) != public_der(leaf.public_key()):
        out.append(f"warning: tls.{name} key file {paths.key_file} does not match the certificate")
    problem = files.secret_problem(paths.key_file)  # what start-up refuses
    if problem is not None:
        out.append(f"warning: tls.{name} key file {problem}")
    return out


def _show_one(name: str, paths: CertPaths, settings: CertSettings) -> list[str]:
    lines = [f"tls.{name}", f"  certificate:  {paths.cert_file}"]
    warnings: list[str] = []
    if os.path.exists(paths.cert_file):
        certs = load_certificates(paths.cert_file)
        summary = summarise(certs)
        left = summary.days_left()
        warnings += _key_warnings(name, paths, certs[0])
        lines += [f"  subject:      {summary.subject}",
                  f"  names:        {', '.join(summary.names) or 'none (no subjectAltName)'}",
                  f"  issuer:       {summary.issuer}{' (self-signed)' if summary.self_signed else ''}",
                  f"  valid from:   {_day(summary.not_before)}",
                  f"  valid until:  {_day(summary.not_after)}",
                  f"  days left:    {left}",
                  f"  key:          {summary.key_type}",
                  f"  chain:        {'; '.join(summary.chain) or 'none'}",
                  f"  sha256:       {summary.fingerprint}"]
        if summary.not_after < now_utc():
            warnings.append(f"warning: tls.{name} expired on {_day(summary.not_after)}")
        elif left < WARN_DAYS:
            warnings.append(f"warning: tls.{name} expires in {left} days ({_day(summary.not_after)}): renew it")
    else:
        lines.append("  (not installed)")
    lines.append(f"  used by:      {', '.join(settings.users.get(name, [])) or 'no virtual server'}")
    pending = pending_request(paths)
    if pending is not None:
        requested = ", ".join(names_in(pending[1])) if pending[1] is not None else "request file missing"
        lines.append(f"  pending:      {paths.csr_file} ({requested})")
    return lines + warnings


def cmd_show(args: argparse.Namespace, settings: CertSettings) -> int:
    if args.name or args.dir:
        if not args.name:
            raise CertificateRefused("--dir needs --name")
        targets = [(args.name, _paths(args, settings))]
    else:
        targets = [(n, CertPaths(n, c, k)) for n, (c, k, _) in settings.tls.items()]
        if not targets:
            raise CertificateRefused(f"no [tls.NAME] certificates in {settings.source}")
    out: list[str] = []
    for name, paths in targets:
        out += _show_one(name, paths, settings)
    print("\n".join(out))
    return 0


def _export_source(args: argparse.Namespace, settings: CertSettings) -> tuple[x509.Certificate, str]:
    if args.name or args.dir:
        if not args.name:
            raise CertificateRefused("--dir needs --name")
        paths = _paths(args, settings)
        if not os.path.exists(paths.cert_file):
            raise CertificateRefused(f"tls.{args.name} is not installed ({paths.cert_file})")
        top = load_certificates(paths.cert_file)[-1]
        if not (is_ca(top) or is_self_signed(top)):
            raise CertificateRefused(f"the top of {paths.cert_file} ({top.subject.rfc4514_string()}) is not a CA "
                                     "certificate: the root is not in the installed chain, take it from your CA")
        return top, f"top of tls.{args.name}'s chain"
    ca = _ca(args, settings)
    if ca.exists():
        return ca.certificate(), f"private CA in {ca.directory}"
    raise CertificateRefused(f"no private CA in {ca.directory}: give --name to export the top of an installed chain")


def cmd_export_ca(args: argparse.Namespace, settings: CertSettings) -> int:
    cert, source = _export_source(args, settings)
    base = args.out
    if os.path.splitext(base)[1].lower() in (".pem", ".cer", ".crt", ".der"):
        base = os.path.splitext(base)[0]
    write_public(base + ".pem", cert.public_bytes(serialization.Encoding.PEM))
    write_public(base + ".cer", cert.public_bytes(serialization.Encoding.DER))
    print(f"exported {cert.subject.rfc4514_string()} ({source})")
    print(f"PEM: {base}.pem   DER: {base}.cer")
    print(f"valid until {_day(cert.not_valid_after_utc)}; SHA-256 fingerprint {fingerprint(cert)}")
    return 0


def cmd_ca_init(args: argparse.Namespace, settings: CertSettings) -> int:
    ca = _ca(args, settings)
    cert = ca.init(args.common_name or f"mailgw private CA ({settings.hostname})", args.days, args.key_type, args.force,
                   [p for value in args.permit or [] for p in value.split(",") if p.strip()])
    print(f"private CA {cert.subject.rfc4514_string()}: certificate {ca.cert_file}, key {ca.key_file} (mode 0600)")
    print(f"may issue for: {describe_constraints(cert).replace('none', 'any name (no name constraints)')}")
    print(f"valid until {_day(cert.not_valid_after_utc)}; SHA-256 fingerprint {fingerprint(cert)}")
    return 0


def cmd_ca_issue(args: argparse.Namespace, settings: CertSettings) -> int:
    ca = _ca(args, settings)
    cert = ca.issue(load_csr(args.csr), args.days)
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.certificate().public_bytes(serialization.Encoding.PEM)
    write_public(args.out, chain)
    print(f"issued {cert.subject.rfc4514_string()} for {', '.join(names_in(cert))}, serial {cert.serial_number:x}, "
          f"valid until {_day(cert.not_valid_after_utc)}: {args.out} (certificate, then the CA certificate)")
    return 0


# --- parsers -------------------------------------------------------------------------------


def _handler(function: Callable[[argparse.Namespace, CertSettings], int], label: str) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        if getattr(args, "config_sub", None):
            args.config = args.config_sub
        try:
            return function(args, read_settings(args))
        except ConfigError as exc:
            for line in exc.problems:
                sys.stderr.write(f"config error: {line}\n")
            return EX_CONFIG
        except CertificateRefused as exc:
            sys.stderr.write(f"mailgwctl {label}: {exc}\n")
            return 1
        except OSError as exc:  # e.g. no permission to write where [tls.NAME] points
            where = f"{exc.filename}: " if exc.filename else ""
            sys.stderr.write(f"mailgwctl {label}: {where}{exc.strerror or exc}\n")
            return 1
    return handle


def _command(sub: Any, name: str, label: str, function: Callable[[argparse.Namespace, CertSettings], int],
             help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=_handler(function, label))
    return parser


def _target(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--name", required=required, help="the certificate's [tls.NAME] in the configuration")
    parser.add_argument("--dir", help="keep NAME.pem, NAME.key (and the request) in DIR instead of where [tls.NAME] points")


def _names_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hostname", help="the main host name (default: server.hostname)")
    parser.add_argument("--alt-name", action="append", metavar="NAME", help="another DNS name or IP address (repeatable)")
    parser.add_argument("--key-type", choices=KEY_TYPES, default="p256", help="new key: p256 (default), p384, rsa2048, rsa3072")
    parser.add_argument("--force", action="store_true", help="replace what is there")


def add_parser(subparsers: Any) -> None:
    cert = subparsers.add_parser("cert", help="certificates for the TLS virtual servers")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    request = _command(cert_sub, "request", "cert request", cmd_request, "new key and PKCS#10 request for a CA")
    _target(request)
    _names_args(request)
    install = _command(cert_sub, "install", "cert install", cmd_install, "check an issued certificate and put it in service")
    _target(install)
    install.add_argument("certificate", metavar="CERT.pem", help="the issued certificate: PEM (its chain may follow), DER or PKCS#7")
    install.add_argument("--chain", action="append", metavar="CHAIN.pem", help="intermediate and root CA certificates (PEM, DER or PKCS#7; repeatable)")
    install.add_argument("--ca-file", action="append", metavar="FILE", help="more trusted CA certificates")
    install.add_argument("--ca-dir", help="the private CA's directory (default: <state_dir>/ca)")
    install.add_argument("--no-system-ca", action="store_true", help="do not trust the system's CA store")
    signed = _command(cert_sub, "self-sign", "cert self-sign", cmd_self_sign, "a self-signed certificate (labs)")
    _target(signed)
    _names_args(signed)
    signed.add_argument("--days", type=int, default=825, help="lifetime in days (default 825)")
    show = _command(cert_sub, "show", "cert show", cmd_show, "installed certificates and who uses them")
    _target(show, required=False)
    export = _command(cert_sub, "export-ca", "cert export-ca", cmd_export_ca,
                      "write the CA certificate clients must trust (PEM and DER)")
    _target(export, required=False)
    export.add_argument("--ca-dir", help="the private CA's directory (default: <state_dir>/ca)")
    export.add_argument("--out", default="mailgw-ca", help="BASE: writes BASE.pem and BASE.cer (default mailgw-ca)")
    ca = subparsers.add_parser("ca", help="a small private CA for organisations without one")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    init = _command(ca_sub, "init", "ca init", cmd_ca_init, "create the private CA (key mode 0600)")
    init.add_argument("--ca-dir", help="where the CA lives (default: <state_dir>/ca)")
    init.add_argument("--common-name", help="the CA's name (default: mailgw private CA (<hostname>))")
    init.add_argument("--days", type=int, default=CA_DAYS, help=f"lifetime in days (default {CA_DAYS})")
    init.add_argument("--key-type", choices=KEY_TYPES, default="p256")
    init.add_argument("--permit", action="append", metavar="DOMAIN",
                      help="limit the CA to this domain (and its subdomains) or IP network; repeatable, recommended")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    issue = _command(ca_sub, "issue", "ca issue", cmd_ca_issue, "sign a request with the private CA")
    issue.add_argument("--ca-dir", help="where the CA lives (default: <state_dir>/ca)")
    issue.add_argument("--csr", required=True, help="the PKCS#10 request (PEM or DER)")
    issue.add_argument("--out", required=True, help="the certificate file to write (certificate, then the CA's)")
    issue.add_argument("--days", type=int, default=ISSUE_DAYS, help=f"lifetime in days (default {ISSUE_DAYS})")


def run(args: argparse.Namespace) -> int:
    """Fallback handler (every action sets its own)."""
    sys.stderr.write("mailgwctl: choose an action (see --help)\n")
    return 2
