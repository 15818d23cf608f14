"""Socket activation: a child twistd adopts a listening socket passed as systemd does and wraps TLS around it itself."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.helpers_ops import tempdir
from tests.support.certs import make_server_cert
from tests.support.gateway import environment, twistd_command

# A twistd application (-y) built from mailgw's own listener and TLS policy: it stands in for
# `bind_tls = ["systemd:domain=INET6:name=imaps"]` (INET for an IPv4 socket).
TAC = """
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from mailgw.net.listen import ListenerService
from mailgw.net.tls import ServerTLS

class Greeter(Protocol):
    def connectionMade(self):
        self.transport.write(b"* OK IMAP4rev1 ready\\r\\n")
    def dataReceived(self, data):
        self.transport.write(b"echo " + data)

application = Application("socket-activation")
tls = ServerTLS("imaps", {cert!r}, {key!r}, "TLSv1.2", ["localhost"])
ListenerService(reactor, "systemd:domain={domain}:name=imaps", Factory.forProtocol(Greeter), tls,
                "imap.t.bind_tls[0]").setServiceParent(application)
"""


class SocketActivationTests(SynchronousTestCase):
    def test_inherited_socket_gets_tls(self) -> None:
        """With LISTEN_FDS=1, LISTEN_PID and LISTEN_FDNAMES=imaps, the child serves TLS on fd 3 it did not bind."""
        self.serve_inherited(socket.AF_INET, "127.0.0.1", "INET")

    def test_inherited_ipv6_socket(self) -> None:
        """The unit's `ListenStream=[::]:993` socket is AF_INET6: `systemd:domain=INET6:name=imaps` serves it (here on ::1)."""
        self.serve_inherited(socket.AF_INET6, "::1", "INET6")

    def serve_inherited(self, family: int, host: str, domain: str) -> None:
        directory = tempdir(self)
        cert = make_server_cert(directory, ["localhost"])
        tac = os.path.join(directory, "activation.tac")
        with open(tac, "w") as handle:
            handle.write(TAC.format(cert=cert.cert_file, key=cert.key_file, domain=domain))
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        # systemd passes sockets from fd 3 and sets LISTEN_PID to the service's pid: the wrapper moves the
        # socket to fd 3 and execs twistd, which keeps the wrapper's pid, so LISTEN_PID names twistd.
        wrapper = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd != 3 and os.close(fd); "
                   "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='imaps'); "
                   "os.execv(sys.argv[2], sys.argv[2:])")
        argv = [sys.executable, "-c", wrapper, str(fd), *twistd_command("-y", tac)]
        child = subprocess.Popen(argv, cwd=directory, env=environment(),
                                 pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(self._stop, child)
        listener.close()  # only the child holds the socket now, as after systemd's hand-over
        output = []
        deadline = time.monotonic() + 30
        for line in child.stdout:
            output.append(line)
            if "for imap.t.bind_tls[0]" in line or time.monotonic() > deadline:
                break
        self.assertIn(f"port={port}", "".join(output), "".join(output))
        context = ssl.create_default_context(cafile=cert.ca_file)
        with context.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="localhost") as conn:
            self.assertIn(conn.version(), ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(conn.recv(100), b"* OK IMAP4rev1 ready\r\n")
            conn.sendall(b"a NOOP\r\n")
            self.assertEqual(conn.recv(100), b"echo a NOOP\r\n")
        # A plaintext client on the same socket never gets a greeting.
        with socket.create_connection((host, port), timeout=10) as plain:
            plain.sendall(b"a CAPABILITY\r\n")
            self.assertNotIn(b"* OK", plain.recv(100))

    def test_missing_socket_is_config_error(self) -> None:
        """A systemd: name that systemd did not pass is a ConfigError naming the listener (exit 78), not a traceback."""
        from twisted.internet import reactor

        from mailgw.errors import ConfigError
        from mailgw.net.listen import ListenerService

        with self.assertRaises(ConfigError) as caught:
            ListenerService(reactor, "systemd:domain=INET:name=no-such-socket", None, None, "imap.s.bind_tls[0]")
        self.assertTrue(caught.exception.problems[0].startswith("imap.s.bind_tls[0]: "), caught.exception.problems)
        self.assertIn("systemd passed no such socket", caught.exception.problems[0])

    def _stop(self, child: subprocess.Popen) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        if child.stdout:
            child.stdout.close()
