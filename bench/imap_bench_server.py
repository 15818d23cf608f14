"""Benchmark helper: run one mailgw IMAP virtual server over a Maildir root; prints 'PORTS plain tls'."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "imap"))


def main() -> None:
    from twisted.internet import reactor
    from twisted.python.threadpool import ThreadPool

    from imap_live import FileTLS
    from mailgw.auth.memory import MemoryDirectory
    from mailgw.auth.service import AuthService
    from mailgw.imap.config import IMAPLimits
    from mailgw.imap.factory import IMAPServerFactory, implicit_tls_factory
    from mailgw.store.maildir.account import MaildirStore

    root, password = sys.argv[1], sys.argv[2]
    if os.environ.get("MAILGW_SWITCH"):
        sys.setswitchinterval(float(os.environ["MAILGW_SWITCH"]))
    fast = len(sys.argv) < 4 or sys.argv[3] != "slow"
    pool = ThreadPool(2, 4, "bench-disk")
    pool.start()
    store = MaildirStore(os.path.join(root, "{user}"), reactor, pool, poll_interval=3600.0)
    directory = MemoryDirectory()
    directory.add_user("alice", password, ["alice@example.test"])
    auth = AuthService([directory], reactor, failure_delay=0)
    limits = IMAPLimits(max_user_ip_sessions=100000)
    tls = FileTLS()
    kw = dict(fast_message_retrieval=fast, limits=limits)  # unmapped listeners require TLS (auth.policy)
    plain = IMAPServerFactory("bench", auth, store, tls, reactor, **kw)
    implicit = IMAPServerFactory("bench", auth, store, tls, reactor, implicit_tls=True, **kw)
    p1 = reactor.listenTCP(0, plain, interface="127.0.0.1", backlog=2048)
    p2 = reactor.listenTCP(0, implicit_tls_factory(implicit), interface="127.0.0.1", backlog=2048)
    print("PORTS %d %d" % (p1.getHost().port, p2.getHost().port), flush=True)
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    reactor.run()


if __name__ == "__main__":
    main()
