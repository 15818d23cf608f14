"""Child process for the kill -9 test: delivers numbered, self-checking messages and prints an ACK after each."""

from __future__ import annotations

import hashlib
import random
import sys


def make_message(n: int, size: int) -> bytes:
    body = (b"%d " % n) * (size // 8 + 1)
    body = body[:size] + b"\r\n"
    digest = hashlib.sha256(body).hexdigest().encode()
    return b"Subject: crash %d\r\nX-Len: %d\r\nX-Sha: %s\r\n\r\n" % (n, len(body), digest) + body


def check_message(data: bytes) -> int:
    """The message number if the message is complete and intact, else raise ValueError."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no header end")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
    if int(fields[b"X-Len"]) != len(body) or hashlib.sha256(body).hexdigest().encode() != fields[b"X-Sha"]:
        raise ValueError("truncated or damaged")
    return int(fields[b"Subject"].split()[1])


def main() -> None:
    from twisted.internet import reactor
    from twisted.python.threadpool import ThreadPool

    from mailgw.store.maildir.account import MaildirStore

    root, start = sys.argv[1], int(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # stop after this many deliveries (0: never)
    pool = ThreadPool(1, 4)
    pool.start()
    store = MaildirStore(root + "/{user}", reactor, pool, hostname="crash.test", poll_interval=0)
    rng = random.Random(start)

    async def loop() -> None:
        n = start
        acct = await store.open_account("u")
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        while True:
            n += 1
            data = make_message(n, rng.randint(10, 60_000))
            if n % 3 == 0:
                r = await acct.append("INBOX", data, frozenset({"\\Seen"}))
            else:
                r = await store.deliver("u", data)
            sys.stdout.write(f"ACK {r.uid_validity} {r.uid} {n}\n")
            sys.stdout.flush()
            if limit and n - start >= limit:
                pool.stop()
                reactor.stop()
                return

    from twisted.internet.defer import ensureDeferred

    reactor.callWhenRunning(lambda: ensureDeferred(loop()).addErrback(lambda f: (f.printTraceback(), reactor.stop())))
    reactor.run()


if __name__ == "__main__":
    main()
