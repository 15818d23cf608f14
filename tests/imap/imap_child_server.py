"""A mailgw IMAP server in a child process (memory store), for attacks that could stall its reactor.

Run as `python imap_child_server.py [--preauth-timeout S]`; prints `PORTS plain tls` when listening.
A test that hangs the child's reactor then fails on its own socket timeouts instead of hanging the
test runner's reactor. The certificate comes from MAILGW_IMAP_TEST_CERT (see imap_live.certificate).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--preauth-timeout", type=float, default=60.0)
    args = ap.parse_args()
    from twisted.internet import reactor

    from tests.imap.imap_live import PASSWORD, FileTLS
    from mailgw.auth.memory import MemoryDirectory
    from mailgw.auth.service import AuthService, ListenerPolicy
    from mailgw.imap.config import IMAPLimits
    from mailgw.imap.factory import IMAPServerFactory, implicit_tls_factory
    from mailgw.store.memory import MemoryStore

    directory = MemoryDirectory()
    directory.add_user("alice", PASSWORD, ["alice@example.test"])
    auth = AuthService([directory], reactor, failure_delay=0,
                       listeners={"child": ListenerPolicy(("PLAIN", "LOGIN"), True)})
    limits = IMAPLimits(preauth_timeout=args.preauth_timeout)
    tls = FileTLS()
    kw: dict[str, Any] = dict(limits=limits)
    store = MemoryStore()
    plain = IMAPServerFactory("child", auth, store, tls, reactor, **kw)
    implicit = IMAPServerFactory("child", auth, store, tls, reactor, implicit_tls=True, **kw)
    p1 = reactor.listenTCP(0, plain, interface="127.0.0.1")
    p2 = reactor.listenTCP(0, implicit_tls_factory(implicit), interface="127.0.0.1")
    print("PORTS %d %d" % (p1.getHost().port, p2.getHost().port), flush=True)
    reactor.run()  # type: ignore[attr-defined]


class ChildServer:
    """The child process; `rss()` is its resident set in bytes."""

    def __init__(self, *extra: str) -> None:
        from tests.imap.imap_live import certificate
        env = dict(os.environ, MAILGW_IMAP_TEST_CERT=":".join(certificate()),
                   PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(HERE)),
                                               os.environ.get("PYTHONPATH", "")]))
        self.proc: Optional[subprocess.Popen[str]] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *extra], stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORTS "):
            self.stop()
            raise RuntimeError("child IMAP server did not start: %r" % line)
        _, plain, tls = line.split()
        self.plain_port, self.tls_port = int(plain), int(tls)

    def rss(self) -> int:
        assert self.proc is not None
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


if __name__ == "__main__":
    main()
