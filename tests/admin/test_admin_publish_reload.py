"""SIGHUP and publishing rules: a rule's client set changes live; allowed open connections stay; moving its listener is refused."""

from __future__ import annotations

import os
import signal
import socket

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.admin.helpers_ops import EventWaiter, port_of, start_gateway, write_config

RULE = """[publish.echo]
listen = "tcp:0:interface=127.0.0.1"
target = "127.0.0.1:{target}"
clients = {clients}
"""


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def exchange(port: int, source: str, data: bytes = b"ping\n") -> bytes:
    """Connect from `source` (any 127/8 address), send, and read the echo (b"" when the rule refuses)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as conn:
            conn.sendall(data)
            return conn.recv(100)
    except (ConnectionResetError, BrokenPipeError):  # the rule closed it at accept
        return b""


class PublishReloadTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        target = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(target.stopListening)
        self.target = target.getHost().port
        self.path, self.state = write_config(self, RULE.format(target=self.target, clients='["127.0.0.1/32"]'))
        self.gateway = start_gateway(self, self.path)
        self.port = port_of(self.gateway, "publish.echo.listen")
        self.events = EventWaiter(self)

    def rewrite(self, clients: str, listen: str = "tcp:0:interface=127.0.0.1") -> None:
        with open(self.path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{self.state}"\n'
                         + RULE.format(target=self.target, clients=clients).replace("tcp:0:interface=127.0.0.1", listen))

    def sighup(self) -> defer.Deferred:
        d = self.events.next("config_reload")
        os.kill(os.getpid(), signal.SIGHUP)
        return d

    @defer.inlineCallbacks
    def test_client_set_reload(self):
        """127.0.0.2 is refused, then allowed after SIGHUP widens the set; a connection open across the reload keeps working."""
        self.assertEqual((yield deferToThread(exchange, self.port, "127.0.0.2")), b"")
        held = yield deferToThread(socket.create_connection, ("127.0.0.1", self.port), 10)
        self.addCleanup(held.close)
        yield deferToThread(held.sendall, b"one\n")
        self.assertEqual((yield deferToThread(held.recv, 100)), b"one\n")
        self.rewrite('["127.0.0.0/8"]')
        event = yield self.sighup()
        self.assertEqual(event["result"], "ok")
        self.assertEqual((yield deferToThread(exchange, self.port, "127.0.0.2")), b"ping\n")
        yield deferToThread(held.sendall, b"two\n")
        self.assertEqual((yield deferToThread(held.recv, 100)), b"two\n")

    @defer.inlineCallbacks
    def test_moved_listener_refused(self):
        """Moving the rule's listener needs a restart: the reload is refused and the old client set stays."""
        self.rewrite('["any"]', listen="tcp:0:interface=127.0.0.3")
        event = yield self.sighup()
        self.assertEqual((event["result"], event["keys"]), ("refused", "publish.echo.listen"))
        self.assertEqual((yield deferToThread(exchange, self.port, "127.0.0.2")), b"")
