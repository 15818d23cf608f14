"""The in-memory store against the shared store contract, plus name-rule tables."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.errors import InvalidMailboxName
from mailgw.store import names
from mailgw.store.memory import MemoryStore
from tests.store.store_concurrency import StoreConcurrency
from tests.store.store_contract import StoreContract


class MemoryStoreContractTests(StoreContract, StoreConcurrency, TestCase):
    """The memory store satisfies the store contract."""

    def make_store(self, **kw: Any) -> MemoryStore:
        return MemoryStore(**kw)


class NameRuleTests(SynchronousTestCase):
    """Folder-name validation and the Maildir++ on-disk mapping."""

    def test_refused(self) -> None:
        """Traversal, NUL, separators in odd places and reserved names are refused with a reason."""
        for bad in ["", "../x", "a/../../b", "/etc", "a//b", "a/", ".", "..", "x..y", "a\x00", "a\nb",
                    "~root", "new", "a/cur", "a*", "b%", "a\\b", " a", "a/ ", "x/" * 21 + "x", "é" * 101]:
            with self.assertRaises(InvalidMailboxName, msg=repr(bad)) as cm:
                names.normalize(bad)
            self.assertTrue(cm.exception.public.startswith("Invalid mailbox name: "))

    def test_inbox_case(self) -> None:
        """INBOX is case-insensitive, also as the first component."""
        self.assertEqual(names.normalize("inbox"), "INBOX")
        self.assertEqual(names.normalize("Inbox/Sub"), "INBOX/Sub")
        self.assertEqual(names.normalize("Sent"), "Sent")

    def test_disk_round_trip(self) -> None:
        """Names map to one Maildir++ directory entry and back; dots inside components are escaped."""
        for name, disk in [("Sent", ".Sent"), ("Archive/2026", ".Archive.2026"), ("v1.2/x", ".v1%2E2.x"),
                           ("Entwürfe", ".Entwürfe")]:
            self.assertEqual(names.to_disk(name), disk)
            self.assertEqual(names.from_disk(disk), name)
        for entry in [".", "..", "..x", ".a..b", "cur", ".a.new", ".x%2Fy", ".%2E%2E", ".INBOX"]:
            self.assertIsNone(names.from_disk(entry), entry)


class StoreServiceTests(TestCase):
    """StoreService closes the store when the service tree stops."""

    def test_stop_closes_store(self) -> Any:
        """stopService returns the store's close() Deferred."""
        from mailgw.store.service import StoreService

        closed: list[bool] = []

        class Store:
            def close(self) -> Any:
                from twisted.internet.defer import succeed

                closed.append(True)
                return succeed(None)

        svc = StoreService(Store())
        svc.startService()
        d = svc.stopService()
        self.assertEqual(closed, [True])
        return d
