"""PROXY protocol received on IMAPS and submission: mailgw's own publishing rule (v2) and HAProxy (send-proxy-v2) in front."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.net.gateway_helpers import PASSWORD, IMAP4SSLFrom, Workspace, connect_from, first_bytes, greeting_from

HAPROXY = "/usr/sbin/haproxy"

INTERNAL_IMAP = """
[imap.behind]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
proxy_protocol_from = ["127.0.0.1/32"]
clients = ["127.0.0.3/32"]
"""
EDGE = """
[publish.front]
listen = "tcp:0:interface=0.0.0.0"
target = "127.0.0.1:{port}"
protocol = "imaps"
clients = ["any"]
proxy_protocol = "v2"
"""
SUBMISSION = """
[submission.relay]
bind = ["tcp:0:interface=127.0.0.1"]
tls = "t"
local_domains = ["example.test"]
proxy_protocol_from = ["127.0.0.1/32"]
"""


class PublishedIMAPSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ws = Workspace(self)
        self.internal = self.ws.gateway("internal", INTERNAL_IMAP)
        self.internal_port = self.internal.port("imap.behind.bind_tls[0]")
        self.edge = self.ws.gateway("edge", EDGE.format(port=self.internal_port))

    def test_client_address_from_the_v2_header_is_the_sessions(self) -> None:
        """A client at 127.0.0.3 logs in through the rule; the internal server's login line names 127.0.0.3."""
        client = IMAP4SSLFrom("127.0.0.3", "127.0.0.1", self.edge.port("publish.front.listen"), self.ws.context())
        try:
            self.assertEqual(client.login("alice", PASSWORD)[0], "OK")
        finally:
            client.logout()
        self.assertIn("imap login alice from 127.0.0.3", self.internal.wait_for("imap login alice"))

    def test_refused_before_the_tls_handshake(self) -> None:
        """Untrusted peers, a trusted peer without a header, and a real address outside `clients` are closed with no byte."""
        self.assertEqual(greeting_from("127.0.0.2", self.internal_port), b"")
        self.assertIn("reason=not_a_trusted_proxy", self.internal.wait_for("rip=127.0.0.2 rport"))
        with connect_from("127.0.0.1", self.internal_port) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a ClientHello where the PROXY header belongs
            self.assertEqual(first_bytes(sock), b"")
        self.assertIn("reason=proxy_header_invalid", self.internal.wait_for("rip=127.0.0.1 rport"))
        with connect_from("127.0.0.4", self.edge.port("publish.front.listen")) as sock:
            self.assertEqual(first_bytes(sock), b"")  # through the trusted rule, but 127.0.0.4 is not a client
        self.assertIn("reason=not_in_clients", self.internal.wait_for("rip=127.0.0.4 rport"))
        refused = [line for line in self.internal.output if "connection_refused listener=imap.behind" in line]
        self.assertEqual(len(refused), 3, refused)


class HAProxySubmissionTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not os.access(HAPROXY, os.X_OK):
            raise SkipTest("HAProxy is not installed")  # .ci/run installs it
        self.ws = Workspace(self)
        self.gateway = self.ws.gateway("g", SUBMISSION)
        self.port = self.start_haproxy(self.gateway.port("submission.relay.bind[0]"))

    def start_haproxy(self, target: int) -> int:
        """HAProxy in the foreground on a socket bound here (port 0, passed as fd@), forwarding with send-proxy-v2."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("0.0.0.0", 0))
        listener.listen(16)
        self.addCleanup(listener.close)
        directory = tempfile.mkdtemp(prefix="haproxy-")
        self.addCleanup(shutil.rmtree, directory, True)
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as handle:
            handle.write(f"""global
    log stdout format raw local0
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend submission
    bind fd@{listener.fileno()}
    default_backend mailgw
backend mailgw
    server gw 127.0.0.1:{target} send-proxy-v2
""")
        process = subprocess.Popen([HAPROXY, "-db", "-f", config], pass_fds=[listener.fileno()], cwd=directory,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop() -> None:
            process.terminate()
            process.wait(10)
        self.addCleanup(stop)
        return listener.getsockname()[1]

    def test_submission_sees_the_client_behind_haproxy(self) -> None:
        """smtplib from 127.0.0.3 through HAProxy: the connect and auth_failed lines carry rip 127.0.0.3; login works."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=15, source_address=("127.0.0.3", 0)) as client:
            client.starttls(context=self.ws.context())
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                client.login("alice", "wrong")
            self.assertEqual(client.login("alice", PASSWORD)[0], 235)
        self.assertIn("127.0.0.3", self.gateway.wait_for("smtp connect"))
        self.assertIn("rip=127.0.0.3", self.gateway.wait_for("auth_failed proto=smtp"))
