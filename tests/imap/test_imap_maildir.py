"""IMAP over the Maildir store on real sockets: header-cache compaction under FETCH, 50 MB APPEND and FETCH memory."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from tests.imap.imap_live import PASSWORD, LiveServer, certificate
from mailgw.store.maildir import index as idx
from mailgw.store.maildir.account import MaildirStore

BIG = 50_000_000
FETCHED = re.compile(rb"\* \d+ FETCH \(UID (\d+) ENVELOPE (.*?) BODY\[HEADER\.FIELDS \(MESSAGE-ID\)\] \{(\d+)\}\r\n")


def padded(n: int) -> bytes:
    """A message with a 540-byte header naming its number in the Subject and Message-ID."""
    # Every header block has the same length, so an offset into the wrong cache file lands on
    # another message's block and passes the cache's sanity checks.
    return (b"From: sender%06d@example.com\r\nTo: r@example.com\r\nSubject: message %06d\r\n"
            b"Message-ID: <m%06d@example.test>\r\nX-Padding: %s\r\n\r\nbody %d\r\n" % (n, n, n, b"p" * 400, n))


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> None:
    """Make VmHWM (peak RSS) start again from the current RSS (Linux clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


CLIENT = r"""
import imaplib, ssl, sys
port, password, mode, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=sys.argv[5])
c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
c.login("alice", password)
line = b"x" * 76 + b"\r\n"
body = b"From: big@example.test\r\nSubject: big\r\n\r\n" + line * ((size - 40) // len(line))
if mode == "append":
    typ, data = c.append("INBOX", None, None, body)
    print(typ, len(body))
elif mode == "all":
    c.select("INBOX")
    typ, data = c.fetch("1:*", "(BODY.PEEK[])")
    print(typ, sum(len(d[1]) for d in data if isinstance(d, tuple)), True)
else:
    c.select("INBOX")
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    print(typ, len(data[0][1]), data[0][1] == body)
c.logout()
"""


class MaildirIMAPTests(unittest.TestCase):
    """A live IMAPS listener over a Maildir store with a real disk pool."""

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mailgw-imap-maildir-")
        self.addCleanup(self.tmp.cleanup)
        self.pool = ThreadPool(1, 4, name="imap-maildir-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.store = MaildirStore(self.tmp.name + "/{user}", reactor, self.pool, hostname="test.example",
                                  poll_interval=0, idle_unload=0)
        self.server = LiveServer(reactor, store=self.store)
        self.addCleanup(self.server.stop)

    async def test_envelopes_during_forced_compaction(self) -> None:
        """FETCH ENVELOPE while another session's expunge (80 %) is compacted: every Message-ID belongs to its UID."""
        acct = await self.store.open_account("alice")
        cur = os.path.join(self.tmp.name, "alice", "cur")
        for n in range(1, 2201):
            data = padded(n)
            with open(os.path.join(cur, f"1700000000.M{n:06d}P1.test,S={len(data)},W={len(data)}:2,S"), "wb") as fh:
                fh.write(data)
        other = await acct.open_folder("INBOX")
        uids = [m.uid for m in other.messages()]
        live = [u for u in uids if u % 5 == 0]
        await other.store_flags([u for u in uids if u % 5], frozenset({"\\Deleted"}), "add")
        backend = acct.folder("INBOX")
        before = os.path.getsize(os.path.join(backend.path, idx.HEADERS))
        flushed = threading.Event()

        def expunge_and_flush() -> None:
            # Another session's EXPUNGE leaves 80 % of the header cache as garbage; the forced
            # save then compacts it while this client's FETCHes are being answered.
            d = other.expunge()
            d.addCallback(lambda _: backend.locked(backend.disk.flush, True))
            d.addBoth(lambda _: flushed.set())

        trigger = threading.Lock()

        def run() -> list[str]:
            # Raw pipelined commands keep the server answering FETCHes the whole time the
            # compaction runs in the pool (imaplib would leave gaps between its round trips).
            ctx = ssl.create_default_context(cafile=certificate()[0])
            sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.server.tls_port), timeout=60),
                                   server_hostname="localhost")
            # Plain FETCH by sequence number (= UID here): it may not report the other session's
            # EXPUNGE (RFC 3501 §7.4.1), so this session never syncs, and the forced save is
            # the only compaction.
            fetch = b"FETCH %s (UID ENVELOPE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])\r\n" % ",".join(
                str(u) for u in live).encode()
            sock.sendall(b"a LOGIN alice " + PASSWORD.encode() + b"\r\nb SELECT INBOX\r\n" +
                         b"".join(b"f%d " % i + fetch for i in range(4)))
            sent, done, after, buf = 4, 0, 0, b""
            triggered = False
            while done < sent:
                chunk = sock.recv(1 << 16)
                assert chunk, buf[-200:]
                buf += chunk
                if not triggered and b" FETCH (UID " in buf:
                    triggered = True
                    if trigger.acquire(blocking=False):  # the first of the clients to see an answer
                        reactor.callFromThread(expunge_and_flush)
                while b"f%d OK Fetch completed.\r\n" % done in buf:
                    done += 1
                    after += flushed.is_set()
                    if after < 2 and sent < 200:
                        sock.sendall(b"f%d " % sent + fetch)
                        sent += 1
            sock.close()
            wrong: list[str] = []
            answers = 0
            for m in FETCHED.finditer(buf):
                uid, envelope, size = int(m.group(1)), m.group(2), int(m.group(3))
                literal = buf[m.end() : m.end() + size]
                found = re.findall(rb"<m(\d+)@example\.test>", envelope + literal)
                answers += 1
                if len(found) != 2 or any(int(x) != uid for x in found):
                    wrong.append(f"uid {uid}: {found}")
            assert answers == sent * len(live), (answers, sent)
            return wrong

        # Three clients at once keep the reactor reading headers while the compaction runs.
        results = await gatherResults([deferToThread(run) for _ in range(3)])
        wrong = [w for r in results for w in r]
        other.close()
        self.assertLess(os.path.getsize(os.path.join(backend.path, idx.HEADERS)), before)  # it did compact
        self.assertEqual(wrong, [])

    def _client_process(self, mode: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", CLIENT, str(self.server.tls_port), PASSWORD, mode, str(BIG),
                              certificate()[0]], capture_output=True, timeout=120, check=True)
        return out.stdout.decode().split()

    async def test_append_and_fetch_50mb_keep_memory_flat(self) -> None:
        """APPEND of a 50 MB message, then FETCH BODY[] of it, each grow server RSS by less than 20 MB."""
        await self.store.open_account("alice")
        reset_peak()
        base = rss_kb("VmRSS")
        typ, size = await deferToThread(self._client_process, "append")
        append_growth = rss_kb("VmHWM") - base
        self.assertEqual(typ, "OK")
        view = await (await self.store.open_account("alice")).open_folder("INBOX")
        [info] = view.messages()
        view.close()
        self.assertEqual(info.size, int(size))
        reset_peak()
        base = rss_kb("VmRSS")
        typ, got, same = await deferToThread(self._client_process, "fetch")
        fetch_growth = rss_kb("VmHWM") - base
        self.assertEqual((typ, int(got), same), ("OK", int(size), "True"))
        self.assertLess(append_growth, 20 * 1024, f"APPEND grew RSS by {append_growth} kB")
        self.assertLess(fetch_growth, 20 * 1024, f"FETCH grew RSS by {fetch_growth} kB")

    async def test_fetch_of_many_bodies_keeps_memory_flat(self) -> None:
        """FETCH 1:* BODY.PEEK[] of 60 MB in 400 messages holds only a couple of batches, not the mailbox."""
        await self.store.open_account("alice")
        cur = os.path.join(self.tmp.name, "alice", "cur")
        total = 0
        for n in range(400):
            data = padded(n) + (b"%07d " % n) * 21400 + b"\r\n"
            total += len(data)
            with open(os.path.join(cur, f"1700000000.M{n:06d}P1.test,S={len(data)},W={len(data)}:2,S"), "wb") as fh:
                fh.write(data)
        reset_peak()
        base = rss_kb("VmRSS")
        typ, got, _ = await deferToThread(self._client_process, "all")
        growth = rss_kb("VmHWM") - base
        self.assertEqual((typ, int(got)), ("OK", total))
        self.assertLess(growth, 20 * 1024, f"FETCH of {total >> 20} MB grew RSS by {growth} kB")
