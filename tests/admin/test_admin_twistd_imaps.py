"""The real `twistd mailgw` with an IMAPS listener: SIGHUP swaps its certificate; socket activation serves IMAPS on fd 3."""

from __future__ import annotations

import imaplib
import os
import signal
import socket
import ssl
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.helpers_ops import tempdir, write_config
from tests.support.certs import make_ca, make_server_cert
from tests.support.gateway import Gateway, environment, twistd_command

IMAPS = """[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth]
backends = ["local"]
[auth.local]
users_file = "{users}"
[imap.t]
bind_tls = ["{bind}"]
tls = "t"
{extra}"""


class TwistdIMAPSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempdir(self)
        self.ca = make_ca(self.dir)
        self.old = make_server_cert(self.dir, ["localhost"], stem="old", ca=self.ca)
        self.new = make_server_cert(os.path.join(self.dir, "renewed"), ["localhost", "renewed.example"], stem="new", ca=self.ca)
        self.users = os.path.join(self.dir, "users")
        os.close(os.open(self.users, os.O_WRONLY | os.O_CREAT, 0o600))
        self.context = ssl.create_default_context(cafile=self.ca[2])

    def body(self, cert, bind: str = "tcp:0:interface=127.0.0.1", extra: str = "") -> str:
        return IMAPS.format(cert=cert.cert_file, key=cert.key_file, users=self.users, bind=bind, extra=extra)

    def imaps(self, port: int) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL("localhost", port, ssl_context=self.context, timeout=15)
        self.addCleanup(client.shutdown)
        return client

    def test_sighup_swaps_certificate(self) -> None:
        """After SIGHUP new IMAPS and STARTTLS handshakes see the renewed certificate; a session opened before keeps working."""
        plain = 'bind = ["tcp:0:interface=127.0.0.1"]\n'
        path, state = write_config(self, self.body(self.old, extra=plain))
        gateway = Gateway(path, self.dir).start(expect=2)
        self.addCleanup(gateway.stop)
        port = gateway.port("imap.t.bind_tls[0]")
        before = self.imaps(port)
        self.assertNotIn(("DNS", "renewed.example"), before.sock.getpeercert()["subjectAltName"])
        with open(path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{state}"\n' + self.body(self.new, extra=plain))
        gateway.process.send_signal(signal.SIGHUP)
        gateway.wait_for("config reload: ok")
        after = self.imaps(port)
        self.assertIn(("DNS", "renewed.example"), after.sock.getpeercert()["subjectAltName"])
        starttls = imaplib.IMAP4("localhost", gateway.port("imap.t.bind[0]"), timeout=15)
        self.addCleanup(starttls.shutdown)
        starttls.starttls(ssl_context=self.context)
        self.assertIn(("DNS", "renewed.example"), starttls.sock.getpeercert()["subjectAltName"])
        self.assertEqual(before.noop()[0], "OK")
        self.assertEqual(after.noop()[0], "OK")
        self.assertIsNone(gateway.process.poll())

    def test_socket_activation(self) -> None:
        """`twistd mailgw` adopts a systemd socket (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES) and serves IMAPS on it."""
        path, _ = write_config(self, self.body(self.old, bind="systemd:domain=INET:name=imaps"))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port, fd = listener.getsockname()[1], listener.fileno()
        wrapper = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd != 3 and os.close(fd); "
                   "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='imaps'); "
                   "os.execv(sys.argv[2], sys.argv[2:])")
        child = subprocess.Popen([sys.executable, "-c", wrapper, str(fd), *twistd_command("mailgw", "--config", path)],
                                 cwd=self.dir, env=environment(), pass_fds=(fd,), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        listener.close()
        self.addCleanup(self._stop, child)
        output = []
        for line in child.stdout:
            output.append(line)
            if "for imap.t.bind_tls[0]" in line:
                break
        self.assertIn(f"port={port}", "".join(output), "".join(output))
        client = self.imaps(port)
        self.assertIn("IMAP4REV1", [c.upper() for c in client.capabilities])

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
