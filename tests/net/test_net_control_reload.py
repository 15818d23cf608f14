"""A reload applies new `clients` and `max_connections` of IMAP and submission servers to new connections."""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from mailgw import assemble
from mailgw.auth.usersfile import write_users_file
from mailgw.config import load_config
from tests.admin.helpers_ops import start_gateway, tempdir, write_config
from tests.support.certs import make_server_cert

BODY = """[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth.local]
users_file = "{users}"
[client_sets.office]
addresses = [{office}]
[imap.a]
bind = ["tcp:0:interface=127.0.0.1"]
tls = "t"
clients = ["office"]
max_connections = {limit}
"""


class ControlReloadTests(TestCase):
    @defer.inlineCallbacks
    def test_client_set_and_limit_change_live(self) -> None:
        """Changing [client_sets.office] and max_connections is applied by a reload, without a restart."""
        root = tempdir(self)
        cert = make_server_cert(os.path.join(root, "tls"), ["localhost"])
        users = os.path.join(root, "users")
        write_users_file(users, {})
        values = dict(cert=cert.cert_file, key=cert.key_file, users=users)
        path, _ = write_config(self, BODY.format(office='"127.0.0.1/32"', limit=5, **values))
        gateway = start_gateway(self, path)
        control = gateway.extras["control.imap.a"]
        self.assertTrue(control.clients.allows("127.0.0.1"))
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text.replace('addresses = ["127.0.0.1/32"]', 'addresses = ["127.0.0.2/32"]')
                         .replace("max_connections = 5", "max_connections = 7"))
        result = yield assemble.reload(gateway, load_config(path))
        self.assertEqual(result, "ok")
        self.assertEqual((control.clients.allows("127.0.0.1"), control.clients.allows("127.0.0.2"), control.max_connections),
                         (False, True, 7))
