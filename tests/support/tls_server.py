"""A minimal implicit-TLS server built from mailgw.net (for TLS policy tests in a separate process).

Usage: python tls_server.py CERT KEY MIN_VERSION; prints the port, then greets each connection.
Run as its own process so that a test can give it a permissive OPENSSL_CONF and prove that the
TLS floor and the cipher list are mailgw's own, not the host's openssl.cnf.
"""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from mailgw.net.listen import ListenerService
from mailgw.net.tls import ServerTLS


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"* OK hello\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.loseConnection()


def main() -> None:
    cert, key, min_version = sys.argv[1:4]
    names = sys.argv[4:] or ["localhost"]
    tls = ServerTLS("t", cert, key, min_version, names)
    service = ListenerService(reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(Greeter), tls.context_factory(), "t")
    service.privilegedStartService()
    service.startService()
    service.listening.addCallback(lambda port: (print(port.getHost().port, flush=True)))
    reactor.run()


if __name__ == "__main__":
    main()
