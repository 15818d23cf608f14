"""A real `twistd mailgw` with a certificate and a users file (alice), and clients bound to a chosen source address."""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import ssl
import tempfile
from typing import Any

from mailgw.auth.usersfile import LocalUser, format_users, hash_password
from tests.support.certs import make_server_cert
from tests.support.gateway import Gateway

PASSWORD = "S3cret!pw"

HEAD = """config_version = 1
[server]
hostname = "localhost"
state_dir = "{state}"
[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth]
backends = ["local"]
failure_delay = "0s"
[auth.local]
users_file = "{users}"
"""


class Workspace:
    """A temporary directory with a CA-signed certificate for localhost/127.0.0.1 and a users file."""

    def __init__(self, case: Any) -> None:
        self.dir = tempfile.mkdtemp(prefix="mailgw-net-")
        case.addCleanup(shutil.rmtree, self.dir, True)
        self.case = case
        self.cert = make_server_cert(os.path.join(self.dir, "tls"), ["localhost", "127.0.0.1"])
        self.users = os.path.join(self.dir, "users")
        fd = os.open(self.users, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, format_users([LocalUser("alice", hash_password(PASSWORD, "bcrypt"), ("alice@example.test",))]).encode())
        os.close(fd)

    def gateway(self, name: str, body: str, expect: int = 1) -> Gateway:
        """Start `twistd mailgw` on HEAD + body; stopped at cleanup."""
        path = os.path.join(self.dir, f"{name}.toml")
        with open(path, "w") as handle:
            handle.write(HEAD.format(state=os.path.join(self.dir, name), cert=self.cert.cert_file,
                                     key=self.cert.key_file, users=self.users) + body)
        gateway = Gateway(path, self.dir).start(expect=expect)
        self.case.addCleanup(gateway.stop)
        return gateway

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cert.ca_file)


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from `source` (bound before connecting)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def first_bytes(sock: socket.socket) -> bytes:
    """What the server sends first: its greeting, or b"" when it closes without one."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def greeting_from(source: str, port: int) -> bytes:
    with connect_from(source, port) as sock:
        return first_bytes(sock)


class IMAP4SSLFrom(imaplib.IMAP4_SSL):
    """imaplib over TLS from a chosen source address."""

    def __init__(self, source: str, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        self.source = source
        super().__init__(host, port, ssl_context=ssl_context, timeout=15)

    def _create_socket(self, timeout: Any) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
