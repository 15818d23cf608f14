"""Connection control of IMAP and submission virtual servers with real sockets: clients allow-list, max_connections."""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from tests.net.gateway_helpers import Workspace, connect_from, first_bytes, greeting_from

IMAP = """
[client_sets.office]
addresses = ["127.0.0.1/32"]
[imap.office]
bind = ["tcp:0:interface=0.0.0.0"]
tls = "t"
clients = ["office"]
max_connections = 2
"""
SUBMISSION = """
[submission.relay]
bind = ["tcp:0:interface=0.0.0.0"]
tls = "t"
local_domains = ["example.test"]
clients = ["127.0.0.1/32"]
"""


class ClientsTests(SynchronousTestCase):
    def test_imap_client_outside_the_allow_list_gets_no_greeting(self) -> None:
        """127.0.0.1 (in the client set) is greeted; 127.0.0.2 is closed with no byte and one connection_refused line."""
        gateway = Workspace(self).gateway("g", IMAP)
        port = gateway.port("imap.office.bind[0]")
        self.assertTrue(greeting_from("127.0.0.1", port).startswith(b"* OK"))
        self.assertEqual(greeting_from("127.0.0.2", port), b"")
        line = gateway.wait_for("connection_refused listener=imap.office rip=127.0.0.2")
        self.assertIn("reason=not_in_clients", line)
        self.assertEqual(sum("connection_refused" in x for x in gateway.output), 1)

    def test_submission_client_outside_the_allow_list_gets_no_greeting(self) -> None:
        """The submission server refuses 127.0.0.2 before its 220 and greets 127.0.0.1."""
        gateway = Workspace(self).gateway("g", SUBMISSION)
        port = gateway.port("submission.relay.bind[0]")
        self.assertEqual(greeting_from("127.0.0.2", port), b"")
        self.assertTrue(greeting_from("127.0.0.1", port).startswith(b"220 "))
        self.assertIn("reason=not_in_clients", gateway.wait_for("connection_refused listener=submission.relay rip=127.0.0.2"))


class MaxConnectionsTests(SynchronousTestCase):
    def test_over_the_limit_closed_without_greeting(self) -> None:
        """With max_connections = 2, a third connection is closed with no greeting; once one closes, a new one is greeted."""
        gateway = Workspace(self).gateway("g", IMAP)
        port = gateway.port("imap.office.bind[0]")
        held = [connect_from("127.0.0.1", port) for _ in range(2)]
        try:
            for sock in held:
                self.assertTrue(first_bytes(sock).startswith(b"* OK"))
            self.assertEqual(greeting_from("127.0.0.1", port), b"")
            self.assertIn("reason=max_connections", gateway.wait_for("connection_refused listener=imap.office"))
        finally:
            held.pop().close()
        deadline = time.monotonic() + 10  # the server learns of the close asynchronously
        while not greeting_from("127.0.0.1", port).startswith(b"* OK"):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        for sock in held:
            sock.close()
