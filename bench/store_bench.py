"""Maildir store benchmark: open, list and deliver costs for 10,000- and 100,000-message folders.

Run:  python bench/store_bench.py [--dir DIR] [--sizes 10000,100000]
Prints, per folder size: first open without UID list or index (rebuild: reads every file),
cold open (new store object, index on disk), warm open (folder already loaded in this
process: a few stats), listing every UID with flags and size, and delivering 1,000
messages of 10 KB with fsync. Then the ratio warm-open(largest) / warm-open(smallest):
opening must cost O(changes), not O(messages).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import react  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from mailgw.store.maildir.account import MaildirStore  # noqa: E402


def message(i: int, size: int) -> bytes:
    head = (f"From: sender{i % 97}@example.com\r\nTo: user@example.com\r\nSubject: message {i}\r\n"
            f"Message-ID: <{i}@bench.example>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\n").encode()
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


def generate(root: str, user: str, folder: str, count: int) -> None:
    """Write `count` messages straight into a Maildir++ folder, as another program would."""
    path = os.path.join(root, user, "." + folder)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    open(os.path.join(path, "maildirfolder"), "ab").close()
    base = int(time.time()) - 86400
    for i in range(count):
        data = message(i, 1500)
        name = f"{base + i // 1000}.M{i}P1.bench,S={len(data)},W={len(data)}:2,{'S' if i % 3 else ''}"
        with open(os.path.join(path, "cur", name), "wb") as fh:
            fh.write(data)


def _timed_collect() -> float:
    t0 = time.perf_counter()
    gc.collect()
    return time.perf_counter() - t0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f} ms"


async def measure(reactor: Any, root: str, sizes: list[int]) -> dict[int, dict[str, float]]:
    pool = ThreadPool(1, 4, name="store-bench")
    pool.start()
    results: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            folder = f"F{n}"
            t0 = time.perf_counter()
            generate(root, "bench", folder, n)
            gen = time.perf_counter() - t0
            time.sleep(1.1)  # let directory mtimes leave the racy window, as on a real server
            r: dict[str, float] = {"generate": gen}

            store = MaildirStore(root + "/{user}", reactor, pool, hostname="bench.example", poll_interval=0)
            acct = await store.open_account("bench")
            t0 = time.perf_counter()
            view = await acct.open_folder(folder, readonly=True)
            r["rebuild_open"] = time.perf_counter() - t0
            view.close()
            await store.close()

            store = MaildirStore(root + "/{user}", reactor, pool, hostname="bench.example", poll_interval=0)
            acct = await store.open_account("bench")
            gc.collect()
            t0 = time.perf_counter()
            view = await acct.open_folder(folder, readonly=True)
            r["cold_open"] = time.perf_counter() - t0
            assert len(view.messages()) == n, len(view.messages())

            warm = []
            for _ in range(30):
                t0 = time.perf_counter()
                v2 = await acct.open_folder(folder, readonly=True)
                warm.append(time.perf_counter() - t0)
                v2.close()
            r["warm_open"] = statistics.median(warm)

            lists = []
            for _ in range(5):
                gc.collect()
                t0 = time.perf_counter()
                listing = [(m.uid, m.flags, m.size) for m in view.messages()]
                lists.append(time.perf_counter() - t0)
                assert len(listing) == n
            r["list"] = statistics.median(lists)
            t0 = time.perf_counter()
            got = await view.headers([m.uid for m in view.messages()[:1000]])  # one pool job under the folder lock
            assert len(got) == min(1000, n)
            r["headers_1000"] = time.perf_counter() - t0
            view.close()

            gc.collect()
            r["gc_full"] = min(_timed_collect() for _ in range(3))
            body = message(0, 10 * 1024)
            await acct.create_folder(f"Deliver{n}")
            t0 = time.perf_counter()
            for _ in range(1000):
                await acct.deliver(body, f"Deliver{n}")
            r["deliver_1000"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(100):
                await acct.deliver(body, folder)
            r["deliver_100_into_big"] = time.perf_counter() - t0
            await store.close()
            results[n] = r
    finally:
        pool.stop()
    return results


def report(results: dict[int, dict[str, float]]) -> None:
    rows = [("generate (files written directly)", "generate"), ("first open, no UID list/index (rebuild)", "rebuild_open"),
            ("cold open (new store, index on disk)", "cold_open"), ("warm open (median of 30)", "warm_open"),
            ("list all UIDs + flags + sizes (median of 5)", "list"), ("headers() of 1,000 messages (one job)", "headers_1000"),
            ("one full gc.collect() with the folder loaded", "gc_full"),
            ("deliver 1,000 x 10 KB with fsync", "deliver_1000"), ("deliver 100 x 10 KB into the big folder", "deliver_100_into_big")]
    sizes = sorted(results)
    print(f"{'':44}" + "".join(f"{n:>14,}" for n in sizes))
    for label, key in rows:
        print(f"{label:44}" + "".join(f"{ms(results[n][key]):>14}" for n in sizes))
    small, big = sizes[0], sizes[-1]
    print(f"deliveries per second (1,000 x 10 KB, fsync): " +
          ", ".join(f"{1000 / results[n]['deliver_1000']:.0f}" for n in sizes))
    ratio = results[big]["warm_open"] / results[small]["warm_open"]
    print(f"ratio warm-open({big:,}) / warm-open({small:,}) = {ratio:.2f}  (aim <= 2)")
    cold = results[big]["cold_open"] / results[small]["cold_open"]
    print(f"ratio cold-open({big:,}) / cold-open({small:,}) = {cold:.2f}  (loads the index: O(messages), no file stat)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="where to build the Maildirs (default: a temporary directory)")
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="mailgw-bench-")
    sizes = [int(s) for s in args.sizes.split(",")]

    async def run(reactor: Any) -> None:
        report(await measure(reactor, root, sizes))

    try:
        react(lambda reactor: __import__("twisted.internet.defer", fromlist=["x"]).ensureDeferred(run(reactor)))
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
