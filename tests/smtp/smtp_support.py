"""Test support for the SMTP suite: certificates, a TLS source, thread pools, a capturing smarthost sink."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, PrivateCertificate, TLSVersion
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailgw.interfaces import IServerTLS


# --------------------------------------------------------------------------- certificates


def make_certs(directory: str, names: tuple[str, ...] = ("localhost",)) -> dict[str, str]:
    """A test CA and a server certificate for `names` + 127.0.0.1, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailgw test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": os.path.join(directory, "ca.pem"), "cert": os.path.join(directory, "cert.pem"),
             "key": os.path.join(directory, "key.pem")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    return paths


@implementer(IServerTLS)
class FileTLS:
    """IServerTLS from a cert/key pair with mailgw's floor (TLS 1.2, AEAD suites)."""

    name = "test"

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.reload()

    def reload(self) -> None:
        with open(self.cert_file, "rb") as c, open(self.key_file, "rb") as k:
            pc = PrivateCertificate.loadPEM(c.read() + k.read())
        self._opts = CertificateOptions(privateKey=pc.privateKey.original, certificate=pc.original,
                                        raiseMinimumTo=TLSVersion.TLSv1_2)

    def context_factory(self) -> Any:
        return self._opts


def start_pool(reactor: Any, name: str = "smtp-test") -> ThreadPool:
    pool = ThreadPool(1, 4, name)
    pool.start()
    return pool


# --------------------------------------------------------------------------- capturing smarthost


@dataclass
class SinkMessage:
    sender: str
    recipients: list[str]
    raw: bytes  # exactly what arrived after 354, up to and including CRLF.CRLF
    body: bytes  # unstuffed by an independent reference decoder


def reference_unstuff(raw: bytes) -> bytes:
    """Independent of mailgw.smtp.wire: split on CRLF, stop at '.', drop one leading dot."""
    lines = raw.split(b"\r\n")
    out = []
    for line in lines:
        if line == b".":
            break
        out.append(line[1:] if line.startswith(b".") else line)
    return b"".join(x + b"\r\n" for x in out)


@dataclass
class SinkBehaviour:
    rcpt_reply: dict[str, bytes] = field(default_factory=dict)  # address -> reply line
    data_reply: Optional[bytes] = None  # reply after the message (default 250)
    starttls: bool = True
    tls: Any = None  # context factory for STARTTLS
    auth: Optional[tuple[str, str]] = None  # required PLAIN credentials
    smtputf8: bool = False


class SinkProtocol(Protocol):
    """A minimal capturing SMTP server (lockstep), for relay tests."""

    def connectionMade(self) -> None:
        self.buf = b""
        self.mode = "cmd"
        self.raw = b""
        self.sender = ""
        self.rcpts: list[str] = []
        self.authed = False
        self.transport.write(b"220 sink ESMTP\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.mode == "data":
                scan = max(0, len(self.raw) - 4)
                self.raw += self.buf
                self.buf = b""
                idx = (b"\r\n" + self.raw).find(b"\r\n.\r\n", scan)
                if idx < 0:
                    return
                self.raw, self.buf = self.raw[: idx + 3], self.raw[idx + 3 :]
                self.mode = "cmd"
                self.factory.messages.append(SinkMessage(self.sender, self.rcpts, self.raw,
                                                         reference_unstuff(self.raw)))
                reply = self.factory.behaviour.data_reply or b"250 2.0.0 Ok: queued\r\n"
                self.transport.write(reply)
                self.raw = b""
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                return
            line, self.buf = self.buf[:nl].decode(), self.buf[nl + 2 :]
            self.factory.commands.append(line)
            self.command(line)

    def command(self, line: str) -> None:
        b = self.factory.behaviour
        verb = line.split(" ")[0].upper()
        w = self.transport.write
        if verb == "EHLO":
            ext = ["250-sink", "250-PIPELINING", "250-SIZE 100000000", "250-8BITMIME"]
            if b.starttls and not getattr(self, "tls", False):
                ext.append("250-STARTTLS")
            if b.auth:
                ext.append("250-AUTH PLAIN LOGIN")
            if b.smtputf8:
                ext.append("250-SMTPUTF8")
            w(("\r\n".join(ext) + "\r\n250 ENHANCEDSTATUSCODES\r\n").encode())
        elif verb == "STARTTLS":
            w(b"220 2.0.0 go ahead\r\n")
            self.buf = b""
            self.tls = True
            self.transport.startTLS(b.tls)
        elif verb == "AUTH":
            import base64
            parts = line.split(" ")
            ok = b.auth is not None and len(parts) == 3 and \
                base64.b64decode(parts[2]) == f"\0{b.auth[0]}\0{b.auth[1]}".encode()
            self.authed = ok
            w(b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 no\r\n")
        elif verb == "MAIL":
            if b.auth and not self.authed:
                w(b"530 5.7.0 Authentication required\r\n")
                return
            self.sender = line[line.index("<") + 1 : line.index(">")]
            self.rcpts = []
            w(b"250 2.1.0 Ok\r\n")
        elif verb == "RCPT":
            addr = line[line.index("<") + 1 : line.index(">")]
            reply = b.rcpt_reply.get(addr, b"250 2.1.5 Ok\r\n")
            if reply.startswith(b"250"):
                self.rcpts.append(addr)
            w(reply)
        elif verb == "DATA":
            self.mode = "data"
            self.raw = b""
            w(b"354 go\r\n")
        elif verb == "QUIT":
            w(b"221 2.0.0 Bye\r\n")
            self.transport.loseConnection()
        else:
            w(b"250 2.0.0 Ok\r\n")


class SinkFactory(Factory):
    protocol = SinkProtocol
    noisy = False

    def __init__(self, behaviour: Optional[SinkBehaviour] = None) -> None:
        self.behaviour = behaviour or SinkBehaviour()
        self.messages: list[SinkMessage] = []
        self.commands: list[str] = []
        self.waiters: list[tuple[int, defer.Deferred[None]]] = []


# --------------------------------------------------------------------------- an in-process submission server


class SubmissionHarness:
    """A real submission listener pair (STARTTLS and implicit TLS) on 127.0.0.1:0 with the memory store and auth."""

    PASSWORD = "S3cret-pw"

    def __init__(self, testcase: Any, reactor: Any, **policy_kw: Any) -> None:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from mailgw.auth.memory import MemoryDirectory
        from mailgw.auth.ntlm import DirectoryNTLMVerifier, NTLMAcceptor
        from mailgw.auth.service import AuthService, ListenerPolicy
        from mailgw.smtp.factory import SubmissionFactory
        from mailgw.smtp.policy import SubmissionPolicy
        from mailgw.smtp.queue import RelayQueue
        from mailgw.store.memory import MemoryStore

        self.dir = tmpdir(testcase)
        self.certs = make_certs(self.dir)
        self.tls = FileTLS(self.certs["cert"], self.certs["key"])
        self.directory = MemoryDirectory()
        from mailgw.auth.md4 import nt_hash

        self.directory.add_user("alice", self.PASSWORD, ["alice@example.test", "a.l@example.test"],
                                nt_hash=nt_hash(self.PASSWORD))
        self.directory.add_user("bob", self.PASSWORD, ["bob@example.test"], nt_hash=nt_hash(self.PASSWORD))
        ntlm = NTLMAcceptor(DirectoryNTLMVerifier([self.directory]), domain="EXAMPLE", dns_domain="example.test")
        self.auth = AuthService([self.directory], reactor, failure_delay=0, ntlm=ntlm,
                                listeners={"submission.relay": ListenerPolicy(("plain", "login", "ntlm"), require_tls=True)})
        self.store = MemoryStore()
        self.pool = start_pool(reactor)
        self.queue = RelayQueue(os.path.join(self.dir, "queue"), reactor, self.pool)
        policy_kw.setdefault("local_domains", frozenset({"example.test"}))
        self.policy = SubmissionPolicy(**policy_kw)
        self.factory = SubmissionFactory("submission.relay", self.auth, self.store, self.queue, self.tls, "mx.example.test",
                                         self.policy, reactor, self.pool)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.implicit_factory = self.factory.for_implicit_tls()
        tls_factory = TLSMemoryBIOFactory(self.tls.context_factory(), False, self.implicit_factory)
        self.tls_port = reactor.listenTCP(0, tls_factory, interface="127.0.0.1")
        self.plain = self.port.getHost().port
        self.implicit = self.tls_port.getHost().port
        testcase.addCleanup(self.stop)

    def set_policy(self, **kw: Any) -> None:
        from mailgw.smtp.policy import SubmissionPolicy

        kw.setdefault("local_domains", frozenset({"example.test"}))
        self.policy = self.factory.policy = self.implicit_factory.policy = SubmissionPolicy(**kw)

    def stop(self) -> "defer.Deferred[Any]":
        for s in list(self.factory.sessions) + list(self.implicit_factory.sessions):
            s.transport.abortConnection()
        d = defer.gatherResults([defer.maybeDeferred(self.port.stopListening),
                                 defer.maybeDeferred(self.tls_port.stopListening)])
        d.addBoth(lambda _: self.pool.stop())
        return d

    def inbox(self, user: str) -> list[bytes]:
        folder = self.store.account(user).folder("INBOX")
        return [folder.stored[uid].data for uid in sorted(folder.stored)]


class RawSMTP:
    """A blocking byte-level SMTP client for transcripts (run it in a thread)."""

    def __init__(self, port: int, implicit: bool = False, ca_file: Optional[str] = None, timeout: float = 10) -> None:
        import socket
        import ssl

        self.ctx = ssl.create_default_context(cafile=ca_file)
        self.ctx.check_hostname = False
        if not ca_file:
            self.ctx.verify_mode = ssl.CERT_NONE
        self.sock: Any = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if implicit:
            self.sock = self.ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self._line()
            lines.append(line.decode())
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        assert self.buf == b"", self.buf
        self.sock = self.ctx.wrap_socket(self.sock, server_hostname="localhost")

    def login(self, user: str = "alice", password: str = SubmissionHarness.PASSWORD) -> None:
        import base64

        code, text = self.cmd("AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
        assert code == 235, text

    def eof(self) -> bool:
        """True if the server closed the connection (after any buffered replies)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except OSError:
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def tmpdir(testcase: Any) -> str:
    """A fresh directory under the system temp dir, removed after the test (trial's mktemp writes into cwd)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="mailgw-smtp-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path
