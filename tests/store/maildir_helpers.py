"""Helpers for Maildir store tests: a store on a temporary directory with a real thread pool."""

from __future__ import annotations

import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool

from mailgw.store.maildir.account import MaildirStore


class MaildirFixture:
    """Mixin for trial TestCases: self.root, self.pool and make_store()."""

    def setUp(self) -> None:  # noqa: N802 (trial API)
        self.tmp = tempfile.TemporaryDirectory(prefix="mailgw-store-")
        self.root = self.tmp.name
        self.pool = ThreadPool(1, 4, name="store-test")
        self.pool.start()
        self.addCleanup(self.tmp.cleanup)  # type: ignore[attr-defined]
        self.addCleanup(self.pool.stop)  # type: ignore[attr-defined]

    def make_store(self, **kw: Any) -> MaildirStore:
        kw.setdefault("hostname", "test.example")
        kw.setdefault("poll_interval", 0)
        kw.setdefault("idle_unload", 0)
        return MaildirStore(self.root + "/{user}", reactor, self.pool, **kw)
