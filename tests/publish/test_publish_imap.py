"""The seed's topology end to end: imaplib over IMAPS through a publishing rule to mailgw's own IMAP server.

Two real `twistd mailgw` processes: the "internal" one runs an IMAP virtual server with IMAPS, the
"edge" one only a [publish.imaps] rule whose target is the first one's IMAPS port (as ISA published
the internal Exchange IMAPS server). TLS runs end to end from imaplib to the internal server.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import ssl
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from mailgw.auth.usersfile import LocalUser, format_users, hash_password
from tests.support.certs import make_server_cert
from tests.support.gateway import Gateway

PASSWORD = "S3cret!pw"
INTERNAL = """config_version = 1
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
[imap.internal]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
auth = ["basic"]
"""
EDGE = """config_version = 1
[server]
state_dir = "{state}"
[auth]
backends = []
[publish.exchange_imaps]
listen = "tcp:0:interface=127.0.0.1"
target = "127.0.0.1:{port}"
protocol = "imaps"
clients = ["any"]
"""


class PublishedIMAPSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.cert = make_server_cert(os.path.join(self.dir, "tls"), ["localhost", "127.0.0.1"])
        users = os.path.join(self.dir, "users")
        fd = os.open(users, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, format_users([LocalUser("alice", hash_password(PASSWORD, "bcrypt"), ("alice@localhost",))]).encode())
        os.close(fd)
        internal_config = os.path.join(self.dir, "internal.toml")
        with open(internal_config, "w") as handle:
            handle.write(INTERNAL.format(state=os.path.join(self.dir, "internal"), cert=self.cert.cert_file,
                                         key=self.cert.key_file, users=users))
        internal = Gateway(internal_config, self.dir).start()
        self.addCleanup(internal.stop)
        edge_config = os.path.join(self.dir, "edge.toml")
        with open(edge_config, "w") as handle:
            handle.write(EDGE.format(state=os.path.join(self.dir, "edge"),
                                     port=internal.port("imap.internal.bind_tls[0]")))
        self.edge = Gateway(edge_config, self.dir).start()
        self.addCleanup(self.edge.stop)

    def test_imaplib_through_the_rule(self) -> None:
        """imaplib verifies the internal server's certificate through the edge, logs in, appends and selects."""
        context = ssl.create_default_context(cafile=self.cert.ca_file)
        client = imaplib.IMAP4_SSL("127.0.0.1", self.edge.port("publish.exchange_imaps.listen"), ssl_context=context)
        try:
            self.assertIn("IMAP4REV1", client.capabilities)
            self.assertEqual(client.login("alice", PASSWORD)[0], "OK")
            self.assertEqual(client.append("INBOX", None, None, b"Subject: through the rule\r\n\r\nhello\r\n")[0], "OK")
            status, data = client.select("INBOX")
            self.assertEqual((status, data), ("OK", [b"1"]))
            status, fetched = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            self.assertIn(b"Subject: through the rule", fetched[0][1])
        finally:
            client.logout()
