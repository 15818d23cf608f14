"""A private OpenLDAP slapd for tests: temp dir, slapadd, loopback port 0-picked with retry, optional TLS.

Plain module (no package): put `tests/support` on sys.path and `import ldap_fixture`, e.g.

    sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
    from ldap_fixture import SlapdFixture

    slapd = SlapdFixture(tls=True).start()     # trial: self.addCleanup(slapd.stop)
    slapd.url, slapd.ldaps_url, slapd.ca_file, slapd.bind_dn, slapd.bind_password, slapd.user_base
    slapd.users["alice"].password            # "S3cret!"; NT hashes in .nt_hash (hex)
    slapd.stop(); slapd.pause() / slapd.resume() (SIGSTOP/SIGCONT: a server that accepts but never answers)

pytest: tests/auth/conftest.py has a `slapd` fixture built on this class. Needs Debian's `slapd`
package (/usr/sbin/slapd, /usr/sbin/slapadd, /etc/ldap/schema) and `cryptography`.
Directory layout and ACLs follow shared notes ldap.md §1-2.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
SAMBA_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "samba.schema")
SUFFIX = "dc=example,dc=test"
SERVICE_DN = f"cn=mailgw,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "svc-Pa55"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-Pa55"
USER_BASE = f"ou=people,{SUFFIX}"
GROUP_DN = f"cn=mailusers,ou=groups,{SUFFIX}"
DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"


@dataclass
class FixtureUser:
    """A user entry of the fixture directory."""

    uid: str
    password: str
    mail: tuple[str, ...] = ()
    cn: str = ""
    nt_hash: Optional[str] = None  # 32 hex digits (sambaNTPassword)
    disabled: bool = False  # sambaAcctFlags [DU ]: no NT hash served
    in_group: bool = True


def available() -> bool:
    """True if slapd and its schema are installed (tests skip otherwise)."""
    return os.path.exists(SLAPD) and os.path.exists(SLAPADD) and os.path.isdir(SCHEMA_DIR)


def ssha(password: str) -> str:
    """{SSHA} = base64(SHA1(password || salt) || salt), slappasswd's default scheme."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def _md4_nt(password: str) -> str:
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)
    from mailgw.auth.md4 import nt_hash
    return nt_hash(password).hex().upper()


def default_users() -> dict[str, FixtureUser]:
    """alice, bob, carol (special characters), dave (disabled for NTLM), eve/frank sharing a mail, gina (no group)."""
    users = [
        FixtureUser("alice", "S3cret!", ("alice@example.test", "a.liddell@example.test"), "Alice Liddell"),
        FixtureUser("bob", "hunter2", ("bob@example.test",), "Bob"),
        FixtureUser("carol", "pa(ss)*\\word", ("carol@example.test",), "Carol (Ops) *Admin*"),
        FixtureUser("dave", "d4ve-pw", ("dave@example.test",), "Dave", disabled=True),
        FixtureUser("eve", "eve-pw", ("eve@example.test", "shared@example.test"), "Eve"),
        FixtureUser("frank", "frank-pw", ("frank@example.test", "shared@example.test"), "Frank"),
        FixtureUser("gina", "gina-pw", ("gina@example.test",), "Gina", in_group=False),
    ]
    for u in users:
        u.nt_hash = _md4_nt(u.password)
    return {u.uid: u for u in users}


def _ldif(users: dict[str, FixtureUser]) -> str:
    out = [f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
           f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
           f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
           f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
           f"dn: {SERVICE_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n"
           f"cn: mailgw\nuserPassword: {ssha(SERVICE_PASSWORD)}\n"]
    for n, u in enumerate(users.values()):
        entry = [f"dn: uid={u.uid},{USER_BASE}", "objectClass: inetOrgPerson", "objectClass: sambaSamAccount",
                 f"uid: {u.uid}", "cn:: " + base64.b64encode((u.cn or u.uid).encode()).decode(), f"sn: {u.uid}",
                 f"userPassword: {ssha(u.password)}", f"sambaSID: {DOMAIN_SID}-{1000 + n}",
                 f"sambaAcctFlags: [{'D' if u.disabled else ''}U{' ' * (9 if u.disabled else 10)}]"]
        entry += [f"mail: {m}" for m in u.mail]
        if u.nt_hash:
            entry.append(f"sambaNTPassword: {u.nt_hash}")
        out.append("\n".join(entry) + "\n")
    members = [f"member: uid={u.uid},{USER_BASE}" for u in users.values() if u.in_group]
    out.append(f"dn: {GROUP_DN}\nobjectClass: groupOfNames\ncn: mailusers\n" + "\n".join(members) + "\n")
    return "\n".join(out)


def _conf(d: str, tls: bool) -> str:
    schemas = [os.path.join(SCHEMA_DIR, s + ".schema") for s in ("core", "cosine", "inetorgperson", "nis")]
    lines = [f"include {s}" for s in schemas + [SAMBA_SCHEMA]]
    lines += [f"pidfile {d}/slapd.pid", f"argsfile {d}/slapd.args", "modulepath /usr/lib/ldap",
              "moduleload back_mdb"]
    if tls:
        lines += [f"TLSCertificateFile {d}/server.crt", f"TLSCertificateKeyFile {d}/server.key"]
    lines += ["database mdb", "maxsize 104857600", f'suffix "{SUFFIX}"', f'rootdn "{ROOT_DN}"',
              f"rootpw {ssha(ROOT_PASSWORD)}", f"directory {d}/db", "index objectClass eq", "index uid,mail eq",
              "index member eq",
              "access to attrs=userPassword by anonymous auth by * none",
              f'access to attrs=sambaNTPassword,sambaLMPassword by dn.exact="{SERVICE_DN}" read by * none',
              f'access to * by dn.exact="{SERVICE_DN}" read by self read by * none']
    return "\n".join(lines) + "\n"


def make_ca(common_name: str, directory: str, prefix: str) -> tuple[str, object, object]:
    """A self-signed EC CA; returns (pem path, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    path = os.path.join(directory, prefix + "-ca.crt")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _server_cert(directory: str, ca_cert: object, ca_key: object) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    with open(os.path.join(directory, "server.crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "server.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlapdFixture:
    """Start with start(), stop with stop(). `log_level=256` makes slapd log BIND DNs and SRCH filters."""

    tls: bool = False
    users: dict[str, FixtureUser] = field(default_factory=default_users)
    log_level: int = 0
    directory: str = ""
    port: int = 0
    tls_port: int = 0
    ca_file: str = ""  # the CA that signed the server certificate (TLS variant)
    other_ca_file: str = ""  # an unrelated CA: trusting only it must fail verification
    process: Optional[subprocess.Popen[bytes]] = None
    bind_dn: str = SERVICE_DN
    bind_password: str = SERVICE_PASSWORD
    root_dn: str = ROOT_DN
    root_password: str = ROOT_PASSWORD
    user_base: str = USER_BASE
    group_dn: str = GROUP_DN
    suffix: str = SUFFIX

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "slapd.log")

    def log_text(self) -> str:
        """slapd's stderr so far (with log_level=256: conn/op lines with BIND dn= and SRCH filter=)."""
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def start(self) -> "SlapdFixture":
        if not available():
            raise RuntimeError("slapd is not installed (Debian package slapd)")
        self.directory = tempfile.mkdtemp(prefix="mailgw-slapd-")
        os.mkdir(os.path.join(self.directory, "db"))
        if self.tls:
            self.ca_file, ca_cert, ca_key = make_ca("mailgw test CA", self.directory, "test")
            self.other_ca_file = make_ca("unrelated CA", self.directory, "other")[0]
            _server_cert(self.directory, ca_cert, ca_key)
        conf = os.path.join(self.directory, "slapd.conf")
        with open(conf, "w") as f:
            f.write(_conf(self.directory, self.tls))
        ldif = os.path.join(self.directory, "data.ldif")
        with open(ldif, "w") as f:
            f.write(_ldif(self.users))
        subprocess.run([SLAPADD, "-q", "-f", conf, "-l", ldif], check=True, capture_output=True, timeout=60)
        for _attempt in range(5):
            if self._spawn(conf):
                return self
        raise RuntimeError(f"slapd did not start: {self.log_text()[-2000:]}")

    def _spawn(self, conf: str) -> bool:
        self.port = _free_port()
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.tls:
            self.tls_port = _free_port()
            urls += f" ldaps://127.0.0.1:{self.tls_port}/"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([SLAPD, "-f", conf, "-h", urls, "-d", str(self.log_level)],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        ports = [self.port] + ([self.tls_port] if self.tls else [])
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # port taken between pick and bind: retry with another
            if all(self._accepts(p) for p in ports):
                return True
            time.sleep(0.01)  # readiness poll of a child process, not test synchronisation
        self._terminate()
        return False

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def _terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def stop_server(self) -> None:
        """Stop slapd but keep its directory (restart with restart())."""
        self._terminate()

    def restart(self) -> None:
        """Start slapd again on the same ports (after stop_server)."""
        urls = f"ldap://127.0.0.1:{self.port}/" + (f" ldaps://127.0.0.1:{self.tls_port}/" if self.tls else "")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([SLAPD, "-f", os.path.join(self.directory, "slapd.conf"), "-h", urls,
                                         "-d", str(self.log_level)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while not self._accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("slapd did not restart")
            time.sleep(0.01)

    def pause(self) -> None:
        """SIGSTOP slapd: connections are still accepted by the kernel, but nothing is answered."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop slapd and remove its directory."""
        self._terminate()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
