"""A standalone submission server for the kill -9 loop: `serve STATE_DIR` or `relay STATE_DIR SINK_PORT`.

`serve` listens on 127.0.0.1:0 (implicit TLS), prints `PORT n`, and never relays, so whatever a
SIGKILL interrupts stays in the queue. `relay` recovers the queue, relays it to the sink
(starttls off), prints `DONE` when the queue is empty and exits.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    from twisted.internet import reactor, task
    from twisted.protocols.tls import TLSMemoryBIOFactory

    from mailgw.auth.memory import MemoryDirectory
    from mailgw.auth.service import AuthService
    from mailgw.smtp.client import SmarthostConfig
    from mailgw.smtp.factory import SubmissionFactory
    from mailgw.smtp.policy import SubmissionPolicy
    from mailgw.smtp.queue import RelayQueue
    from mailgw.smtp.relay import RelayRunner
    from mailgw.store.memory import MemoryStore
    from tests.smtp.smtp_support import FileTLS, make_certs, start_pool

    mode, state = sys.argv[1], sys.argv[2]
    pool = start_pool(reactor, "crash")
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    queue = RelayQueue(os.path.join(state, "queue"), reactor, pool)
    directory = MemoryDirectory()
    directory.add_user("alice", "pw", ["alice@example.test"])
    auth = AuthService([directory], reactor, failure_delay=0)
    policy = SubmissionPolicy(local_domains=frozenset({"example.test"}))
    if mode == "serve":
        certs_dir = os.path.join(state, "certs")
        if not os.path.exists(os.path.join(certs_dir, "key.pem")):
            os.makedirs(certs_dir, exist_ok=True)
            make_certs(certs_dir)
        tls = FileTLS(os.path.join(certs_dir, "cert.pem"), os.path.join(certs_dir, "key.pem"))
        factory = SubmissionFactory("crash", auth, MemoryStore(), queue, tls, "crash.example.test", policy, reactor,
                                    pool, implicit_tls=True)
        port = reactor.listenTCP(0, TLSMemoryBIOFactory(tls.context_factory(), False, factory), interface="127.0.0.1")
        print(f"PORT {port.getHost().port}", flush=True)
    else:
        cfg = SmarthostConfig("127.0.0.1", int(sys.argv[3]), "off", helo="crash.example.test")
        runner = RelayRunner(queue, reactor, "crash.example.test", policy.is_local, None, cfg, poll_interval=0.05,
                             backoff=(0.05,), concurrency=8)
        runner.start()

        def check() -> None:
            if not queue.index and not runner.in_flight:
                print("DONE", flush=True)
                reactor.stop()

        task.LoopingCall(check).start(0.05, now=False)
    reactor.run()


if __name__ == "__main__":
    main()
