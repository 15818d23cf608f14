"""Helpers for IMAP transcript tests: a session over StringTransport with the memory store and auth; a thread deadline."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from twisted.internet.testing import MemoryReactorClock, StringTransport

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService, ListenerPolicy
from mailgw.imap.config import IMAPLimits
from mailgw.imap.factory import IMAPServerFactory
from mailgw.store.memory import MemoryStore

PASSWORD = "S3cret!pw"

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: Hello\r\n"
    b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m1@example.test>\r\n"
    b"\r\n"
    b"Hi Bob,\r\nthis is a test.\r\n"
)


class InlineReactor(MemoryReactorClock):
    """A MemoryReactorClock whose callFromThread runs at once (the store's pool runs inline, see InlinePool)."""

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class InlinePool:
    """A thread pool stand-in that runs each job at once on the calling thread.

    Lets the transcript tests drive the real Maildir store (real files, real locks) on a
    MemoryReactorClock, deterministically; the threaded behaviour is tested on real pools elsewhere.
    """

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kw: Any) -> None:
        try:
            result = f(*args, **kw)
        except BaseException:
            from twisted.python.failure import Failure

            on_result(False, Failure())
        else:
            on_result(True, result)


class FakeTLSTransport(StringTransport):
    """A StringTransport that records startTLS (the handshake itself is tested on real sockets)."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_started: list[Any] = []

    def startTLS(self, ctx: Any) -> None:
        self.tls_started.append(ctx)


class FakeServerTLS:
    name = "test"

    def context_factory(self) -> Any:
        return "ctx"

    def reload(self) -> None:
        pass


class Harness:
    """One server policy, one memory store and directory, any number of sessions."""

    def __init__(self, require_tls: bool = True, mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
                 fast: bool = True, limits: Optional[IMAPLimits] = None, ntlm: Any = None,
                 with_tls: bool = True, maildir: Optional[str] = None) -> None:
        self.reactor = InlineReactor()
        if maildir is None:
            self.store: Any = MemoryStore(clock=lambda: 1764756000.0)
        else:
            from mailgw.store.maildir.account import MaildirStore

            self.store = MaildirStore(maildir + "/{user}", self.reactor, InlinePool(), hostname="test.example",
                                      poll_interval=0, idle_unload=0)
        self.directory = MemoryDirectory()
        self.directory.add_user("alice", PASSWORD, ["alice@example.test"])
        self.auth = AuthService([self.directory], self.reactor, failure_delay=0, ntlm=ntlm,
                                listeners={"test": ListenerPolicy(mechanisms, require_tls)})
        self.factory = IMAPServerFactory("test", self.auth, self.store, FakeServerTLS() if with_tls else None,
                                         self.reactor, fast_message_retrieval=fast, limits=limits)
        self.asked = 0
        original = self.directory.check_password

        def counting(login: str, password: str) -> Any:
            self.asked += 1
            return original(login, password)

        self.directory.check_password = counting  # type: ignore[method-assign]

    def account(self) -> Any:
        if isinstance(self.store, MemoryStore):
            return self.store.account("alice")
        found: list[Any] = []
        self.store.open_account("alice").addCallback(found.append)  # synchronous with InlinePool
        return found[0]

    def connect(self, tls: bool = True) -> "Client":
        proto = self.factory.buildProtocol(None)
        proto.tls = tls
        transport = FakeTLSTransport()
        proto.makeConnection(transport)
        return Client(proto, transport, self.reactor)


class Client:
    """Drives one session: send() bytes, read() what the server wrote since the last read."""

    def __init__(self, proto: Any, transport: FakeTLSTransport, reactor: MemoryReactorClock) -> None:
        self.proto, self.transport, self.reactor = proto, transport, reactor
        self.greeting = self.read()

    def read(self) -> bytes:
        self.reactor.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        self.proto.dataReceived(data)
        return self.read()

    def login(self) -> bytes:
        return self.send(b"L LOGIN alice " + PASSWORD.encode() + b"\r\n")

    def select(self, box: bytes = b"INBOX") -> bytes:
        self.login()
        return self.send(b"S SELECT " + box + b"\r\n")


DEADLINE = 5.0  # seconds for one property example; each takes milliseconds


def within(seconds: float, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a thread; fails if it has not returned after `seconds` (a loop that stops advancing)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # re-raised below in the test's thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise AssertionError("%s did not return within %.0f s" % (getattr(fn, "__name__", fn), seconds))
    if "error" in box:
        raise box["error"]
    return box.get("value")
