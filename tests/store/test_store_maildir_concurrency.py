"""Maildir-only races: header cache compaction under readers, two processes on one account."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from mailgw.store.maildir import index as idx
from tests.store.maildir_helpers import MaildirFixture
from tests.store.store_concurrency import message_id


def padded(n: int) -> bytes:
    """A message with a 540-byte header naming its number in the Message-ID."""
    # Every header block has the same length, so an offset into the wrong cache file lands on
    # another message's block and passes the cache's sanity checks.
    return (b"From: sender%06d@example.com\r\nTo: r@example.com\r\nSubject: message %06d\r\n"
            b"Message-ID: <m%06d@example.test>\r\nX-Padding: %s\r\n\r\nbody %d\r\n" % (n, n, n, b"p" * 400, n))


def fill(root: str, count: int) -> None:
    """Write `count` messages straight into cur/, as another delivery agent would."""
    cur = os.path.join(root, "cur")
    for n in range(1, count + 1):
        data = padded(n)
        with open(os.path.join(cur, f"1700000000.M{n:06d}P1.test,S={len(data)},W={len(data)}:2,S"), "wb") as fh:
            fh.write(data)


class CompactionTests(MaildirFixture, TestCase):
    """Defect 1 of issue 13: a header-cache compaction must never hand out another message's header block."""

    @inlineCallbacks
    def test_header_reads_during_forced_compaction(self) -> Any:
        """Every header returned while the cache is compacted (80 % expunged, forced save) carries its own Message-ID."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        fill(os.path.join(self.root, "alice"), 2200)
        view = yield acct.open_folder("INBOX")
        uids = [m.uid for m in view.messages()]
        self.assertEqual(len(uids), 2200)
        doomed = [u for u in uids if u % 5]
        yield view.store_flags(doomed, frozenset({"\\Deleted"}), "add")
        yield view.expunge()
        live = [m.uid for m in view.messages()]
        backend = acct.folder("INBOX")
        before = os.path.getsize(os.path.join(backend.path, idx.HEADERS))
        saved = backend.locked(backend.disk.flush, True)
        done: list[bool] = []
        saved.addBoth(lambda r: (done.append(True), r)[1])
        wrong = []
        rounds = 0
        while not done or rounds < 2:
            rounds += 1
            singles = [(u, view.header_bytes(u)) for u in live[::50]]
            blocks = yield view.headers(live)
            for uid, d in singles:
                blocks[uid] = yield d
            wrong += [u for u in live if message_id(blocks[u]) != b"<m%06d@example.test>" % u]
            yield deferLater(reactor, 0, lambda: None)
        yield saved
        self.assertLess(os.path.getsize(os.path.join(backend.path, idx.HEADERS)), before)  # it did compact
        self.assertEqual(wrong, [])
        view.close()


class TwoProcessAccountTests(MaildirFixture, TestCase):
    """Two store instances (two mailgw processes) on one account serialise through flock."""

    @inlineCallbacks
    def test_two_stores_subscribe_at_once(self) -> Any:
        """Subscriptions written by two stores at once are all kept."""
        one, two = self.make_store(), self.make_store()
        a = yield one.open_account("alice")
        b = yield two.open_account("alice")
        for i in range(25):
            yield gatherResults([a.subscribe(f"A{i}"), b.subscribe(f"B{i}")], consumeErrors=True)
        subs = set((yield a.subscriptions()))
        self.assertLessEqual({f"A{i}" for i in range(25)} | {f"B{i}" for i in range(25)}, subs)
        self.assertEqual([e for e in os.listdir(os.path.join(self.root, "alice")) if "tmp" in e], ["tmp"])

