"""[imap.NAME] and [submission.NAME] clients, max_connections, proxy_protocol_from: parsed, defaulted, refused by key."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailgw.config import load_config_text
from mailgw.errors import ConfigError

BASE = """config_version = 1
[auth]
backends = []
[client_sets.office]
addresses = ["192.0.2.0/24"]
[imap.a]
bind = ["tcp:0:interface=127.0.0.1"]
require_tls = false
auth = []
"""


class ConnectionControlConfigTests(SynchronousTestCase):
    def test_defaults_admit_everyone(self) -> None:
        """Without the keys a server admits any client, 1000 at once, and takes no PROXY header."""
        imap = load_config_text(BASE).imap["a"]
        self.assertEqual((imap.clients, imap.max_connections, imap.proxy_protocol_from), (("any",), 1000, ()))

    def test_values_parse(self) -> None:
        """CIDRs, client set names and proxies parse as given."""
        imap = load_config_text(BASE + 'clients = ["office", "2001:db8::/32"]\nmax_connections = 5\n'
                                'proxy_protocol_from = ["127.0.0.1/32"]\n').imap["a"]
        self.assertEqual((imap.clients, imap.max_connections, imap.proxy_protocol_from),
                         (("office", "2001:db8::/32"), 5, ("127.0.0.1/32",)))

    def test_errors_name_the_key(self) -> None:
        """An unknown client set, an empty list, a zero limit and a proxy that is no address are refused by dotted key."""
        for extra, key in (('clients = ["nowhere"]', "imap.a.clients[0]"), ("clients = []", "imap.a.clients"),
                           ("max_connections = 0", "imap.a.max_connections"),
                           ('proxy_protocol_from = ["office"]', "imap.a.proxy_protocol_from")):
            with self.assertRaises(ConfigError) as caught:
                load_config_text(BASE + extra + "\n")
            self.assertTrue(caught.exception.problems[0].startswith(key + ":"), caught.exception.problems)
