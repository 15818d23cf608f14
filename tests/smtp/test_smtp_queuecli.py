"""`mailgwctl queue list|flush|delete` against a real queue directory."""

from __future__ import annotations

import contextlib
import io
import json
import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from mailgw.cli.main import main
from mailgw.smtp.queue import RelayQueue
from tests.smtp.smtp_support import start_pool, tmpdir


class QueueCLITests(TestCase):
    def setUp(self) -> None:
        self.state = tmpdir(self)
        self.pool = start_pool(reactor)
        self.addCleanup(self.pool.stop)
        self.queue = RelayQueue(os.path.join(self.state, "queue", "relay"), reactor, self.pool)

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["queue", "--state-dir", self.state, *argv])
        return code, out.getvalue(), err.getvalue()

    async def test_list_flush_delete(self) -> None:
        """list shows queued mail, flush leaves a request, delete needs --yes and removes the files."""
        a = await self.queue.enqueue("alice@example.test", ["x@remote.example"], b"Subject: a\r\n\r\nb\r\n")
        b = await self.queue.enqueue("alice@example.test", ["y@remote.example"], b"Subject: b\r\n\r\nb\r\n")
        code, out, _ = self.ctl("list")
        self.assertEqual(code, 0)
        self.assertIn(a, out)
        self.assertIn("<alice@example.test> -> y@remote.example", out)
        self.assertIn("2 message(s) queued", out)
        code, out, _ = self.ctl("list", "-f", "json")
        self.assertEqual(sorted(r["id"] for r in json.loads(out)), sorted([a, b]))
        self.assertEqual(self.ctl("flush")[0], 0)
        self.assertTrue(os.path.exists(os.path.join(self.queue.directory, "flush")))
        code, _, err = self.ctl("delete", a)
        self.assertEqual(code, 2)
        self.assertIn("--yes", err)
        self.assertEqual(self.ctl("delete", a, "--yes")[0], 0)
        self.assertFalse(os.path.exists(self.queue.data_path(a)))
        code, _, err = self.ctl("delete", "nonexistent", "--yes")
        self.assertEqual(code, 1)
        self.assertEqual([e["id"] for e in json.loads(self.ctl("list", "-f", "json")[1])], [b])

    def test_relay_queue_provides_interface(self) -> None:
        """RelayQueue provides IRelayQueue."""
        from zope.interface.verify import verifyObject

        from mailgw.interfaces import IRelayQueue

        self.assertTrue(verifyObject(IRelayQueue, self.queue))

    async def test_delete_running_queue(self) -> None:
        """The running queue's delete() (manhole) forgets the message at once and unlinks it in the pool."""
        from twisted.internet.task import deferLater

        a = await self.queue.enqueue("alice@example.test", ["x@remote.example"], b"Subject: a\r\n\r\nb\r\n")
        self.assertTrue(self.queue.delete(a))
        self.assertEqual(self.queue.entries(), [])
        self.assertFalse(self.queue.delete("../etc"))
        for _ in range(500):
            if not os.path.exists(self.queue.data_path(a)) and not self.queue.exists(a):
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(os.path.exists(self.queue.data_path(a)))
        self.assertFalse(self.queue.exists(a))
        self.assertFalse(self.queue.delete(a))
