"""docs/operations.md's install sequence, followed literally: root writes with mailgwctl, the gateway runs unprivileged."""

from __future__ import annotations

import imaplib
import os
import ssl
import sys
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.admin.ctl_helpers import PASSWORD, mailgwctl, workspace
from tests.admin.unprivileged import UnprivilegedGateway, run_as

SERVICE_UID, SERVICE_GID = 64125, 64126  # `useradd --system mailgw`: numbers are all the kernel sees


def login(port: int, user: str, cafile: str) -> bool:
    context = ssl.create_default_context(cafile=cafile)
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30) as client:
        try:
            client.login(user, PASSWORD)
        except imaplib.IMAP4.error:
            return False
        return client.select("INBOX")[0] == "OK"


class UnprivilegedServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the install sequence runs as root and starts the service as another user")
        self.root = workspace(self)
        os.chmod(self.root, 0o755)
        self.etc = os.path.join(self.root, "etc", "mailgw")
        self.state = os.path.join(self.root, "var", "lib", "mailgw")
        # install -d -m 0750 -o root -g mailgw /etc/mailgw; StateDirectory=mailgw (mailgw:mailgw 0750)
        os.makedirs(self.etc)
        os.chown(self.etc, 0, SERVICE_GID)
        os.chmod(self.etc, 0o750)
        os.makedirs(self.state)
        os.chown(self.state, SERVICE_UID, SERVICE_GID)
        os.chmod(self.state, 0o750)
        self.config = os.path.join(self.etc, "mailgw.toml")
        with open(self.config, "w") as handle:
            handle.write(f"""config_version = 1
[server]
hostname = "localhost"
state_dir = "{self.state}"
[tls.mail]
cert_file = "{self.etc}/mail.pem"
key_file = "{self.etc}/mail.key"
[auth]
failure_delay = "0s"
[auth.local]
users_file = "{self.etc}/users"
[imap.secure]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "mail"
""")
        os.chown(self.config, 0, SERVICE_GID)  # install -m 0640 -o root -g mailgw ...
        os.chmod(self.config, 0o640)

    def ctl(self, *args: str) -> None:
        done = mailgwctl("--config", self.config, *args, stdin=PASSWORD + "\n")
        self.assertEqual(done.code, 0, done.out + done.err)

    def test_service_user_reads_what_root_wrote(self) -> None:
        """After root's cert self-sign and user add, check-config passes as the service user and alice logs in; bob, added while it runs, too."""
        self.ctl("cert", "self-sign", "--name", "mail", "--alt-name", "127.0.0.1")
        self.ctl("user", "add", "alice", "--password-stdin")
        checked = run_as(SERVICE_UID, SERVICE_GID, [sys.executable, "-m", "mailgw.cli", "check-config",
                                                    "--config", self.config], self.root, cwd=self.state)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        gateway = UnprivilegedGateway(self.config, self.state, SERVICE_UID, SERVICE_GID, self.root,
                                      env={"HOME": self.state}).start()
        self.addCleanup(gateway.stop)
        port, cafile = gateway.port("imap.secure.bind_tls[0]"), os.path.join(self.etc, "mail.pem")
        self.assertTrue(login(port, "alice", cafile), "".join(gateway.output))
        self.ctl("user", "add", "bob", "--password-stdin")
        deadline = time.monotonic() + 15  # the service re-checks the file at most once a second
        while not login(port, "bob", cafile):
            self.assertNotIn("not reloaded", "".join(gateway.output))
            self.assertLess(time.monotonic(), deadline, "".join(gateway.output))
            time.sleep(0.2)
        self.assertEqual(os.stat(os.path.join(self.state, "mail")).st_uid, SERVICE_UID)
