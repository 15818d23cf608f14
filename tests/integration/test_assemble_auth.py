"""The credential checker as assemble.py builds it from a config: LDAP over ldaps, then the local file."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from mailgw import assemble
from mailgw.auth.md4 import nt_hash
from mailgw.auth.usersfile import LocalUser, hash_password, write_users_file
from mailgw.config import load_config_text
from mailgw.errors import AuthFailed, AuthUnavailable
from mailgw.interfaces import ClientInfo
from tests.support import ldap_fixture

CLIENT = ClientInfo(protocol="imap", listener="secure", peer_host="127.0.0.1", tls=True)


class AssembledAuthTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if not ldap_fixture.available():
            self.skipTest("slapd is not installed")
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.slapd = ldap_fixture.SlapdFixture(tls=True).start()
        self.addCleanup(self.slapd.stop)
        secret = os.path.join(self.dir, "ldap-secret")
        with open(secret, "w") as handle:
            handle.write(self.slapd.bind_password + "\n")
        users = os.path.join(self.dir, "users")
        write_users_file(users, {"dave": LocalUser("dave", hash_password("local-pw", "bcrypt"), ("dave@example.test",), nt_hash("local-pw"))})
        self.config = load_config_text(f"""
config_version = 1
[server]
state_dir = "{self.dir}/state"
[auth]
backends = ["ldap.corp", "local"]
failure_delay = "0s"
[auth.local]
users_file = "{users}"
[auth.ldap.corp]
urls = ["{self.slapd.ldaps_url}"]
ca_file = "{self.slapd.ca_file}"
bind_dn = "{self.slapd.bind_dn}"
bind_password_file = "{secret}"
user_base = "{self.slapd.user_base}"
nt_hash_attribute = "sambaNTPassword"
timeout = "3s"
""")
        self.auth = assemble.build_auth(self.config, reactor)
        self.addCleanup(self.auth.close)

    @defer.inlineCallbacks
    def test_backends_in_order(self) -> None:
        """A directory user, a local user, and a wrong password each get the checker's answer."""
        alice = yield self.auth.login("alice@example.test", "S3cret!", CLIENT)
        self.assertEqual(alice.user, "alice")
        self.assertEqual(alice.backend, "ldap.corp")
        dave = yield self.auth.login("dave", "local-pw", CLIENT)
        self.assertEqual(dave.backend, "local")
        yield self.assertFailure(self.auth.login("alice", "wrong", CLIENT), AuthFailed)
        found = yield self.auth.lookup("bob@example.test")
        self.assertEqual(found.user, "bob")

    @defer.inlineCallbacks
    def test_directory_down_is_temporary(self) -> None:
        """With the directory stopped, a login is a temporary failure, not a wrong password."""
        self.slapd.stop_server()
        yield self.assertFailure(self.auth.login("alice", "S3cret!", CLIENT), AuthUnavailable)
