"""Behaviour every IMessageStore must show: run against the memory store and the Maildir store."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import inlineCallbacks
from zope.interface.verify import verifyObject

from mailgw.errors import (
    InvalidMailboxName,
    MailboxExists,
    MessageExpunged,
    NoSuchMailbox,
    QuotaExceeded,
    ReadOnlyFolder,
)
from mailgw.interfaces import IAccount, IFolder, IMessageStore

MSG = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody line\r\n"


def msg(n: int) -> bytes:
    return b"From: a@example.com\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n)


@inlineCallbacks
def read_message(view: Any, uid: int) -> Any:
    """The whole stored message of a uid, through IFolder.open_message (IMessageBody)."""
    body = yield view.open_message(uid)
    try:
        data = yield body.read_all()
    finally:
        body.close()
    return data


class Recorder:
    """A folder listener that counts notifications."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def folder_changed(self, folder: Any) -> None:
        self.calls.append(folder)


class StoreContract:
    """Mixin: subclasses provide make_store(**quota) in setUp-able form (may return a Deferred-free object)."""

    def make_store(self, **kw: Any) -> Any:
        raise NotImplementedError

    @inlineCallbacks
    def test_provides_interfaces(self) -> Any:
        """The store, its accounts and folder views provide the declared interfaces."""
        store = self.make_store()
        self.assertTrue(verifyObject(IMessageStore, store))
        acct = yield store.open_account("alice")
        self.assertTrue(verifyObject(IAccount, acct))
        folder = yield acct.open_folder("INBOX")
        self.assertTrue(verifyObject(IFolder, folder))
        folder.close()

    @inlineCallbacks
    def test_new_user_has_special_use_folders(self) -> Any:
        """A new account lists INBOX first and the five SPECIAL-USE folders with their roles."""
        acct = yield self.make_store().open_account("alice")
        infos = yield acct.list_folders()
        self.assertEqual(infos[0].name, "INBOX")
        roles = {i.name: i.special_use for i in infos}
        self.assertEqual(roles, {"INBOX": None, "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                                 "Junk": "\\Junk", "Archive": "\\Archive"})
        subs = yield acct.subscriptions()
        self.assertIn("Sent", subs)

    @inlineCallbacks
    def test_uids_ascending_never_reused(self) -> Any:
        """Expunging the highest UID and appending again yields a higher UID, never the old one."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        r1 = yield store.deliver("alice", msg(1))
        r2 = yield store.deliver("alice", msg(2))
        self.assertEqual((r1.uid, r2.uid), (1, 2))
        self.assertEqual(r1.uid_validity, r2.uid_validity)
        f = yield acct.open_folder("INBOX")
        yield f.store_flags([2], frozenset({"\\Deleted"}), "add")
        gone = yield f.expunge()
        self.assertEqual(gone, [2])
        r3 = yield acct.append("INBOX", msg(3))
        self.assertEqual(r3.uid, 3)
        yield f.refresh()
        self.assertEqual([m.uid for m in f.messages()], [1, 3])
        self.assertEqual(f.uid_next, 4)
        f.close()

    @inlineCallbacks
    def test_uid_validity_differs_between_folders(self) -> Any:
        """Each folder has its own UIDVALIDITY, and a recreated folder gets a new one."""
        acct = yield self.make_store().open_account("alice")
        yield acct.create_folder("Projects")
        s1 = yield acct.status("Projects")
        s2 = yield acct.status("INBOX")
        self.assertNotEqual(s1.uid_validity, s2.uid_validity)
        yield acct.delete_folder("Projects")
        yield acct.create_folder("Projects")
        s3 = yield acct.status("Projects")
        self.assertNotEqual(s3.uid_validity, s1.uid_validity)

    @inlineCallbacks
    def test_append_flags_date_and_crlf(self) -> Any:
        """APPEND keeps flags and internal date; bare LF is stored as CRLF and sizes count CRLF octets."""
        acct = yield self.make_store().open_account("alice")
        when = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
        r = yield acct.append("Drafts", b"Subject: x\n\nline\n", frozenset({"\\Draft", "\\seen", "$Label1", "\\Recent"}), when)
        f = yield acct.open_folder("Drafts")
        [m] = f.messages()
        self.assertEqual(m.uid, r.uid)
        self.assertEqual(m.flags, frozenset({"\\Draft", "\\Seen", "$Label1"}))
        self.assertEqual(m.internal_date, when)
        body = yield read_message(f, m.uid)
        self.assertEqual(body, b"Subject: x\r\n\r\nline\r\n")
        self.assertEqual(m.size, len(body))
        self.assertEqual((yield f.header_bytes(m.uid)), b"Subject: x\r\n\r\n")
        f.close()

    @inlineCallbacks
    def test_trycreate_and_invalid_names(self) -> Any:
        """APPEND to a missing folder is NoSuchMailbox; traversal names are InvalidMailboxName."""
        acct = yield self.make_store().open_account("alice")
        yield self.assertFailure(acct.append("Nope", MSG), NoSuchMailbox)
        yield self.assertFailure(acct.open_folder("Nope"), NoSuchMailbox)
        for bad in ["../x", "a/../../b", "/etc", "a//b", "x\x00y", "~root", "..", "a/", "cur", "a/tmp"]:
            yield self.assertFailure(acct.create_folder(bad) if bad != "a/" else acct.open_folder(bad), InvalidMailboxName)
        yield self.assertFailure(acct.create_folder("Sent"), MailboxExists)
        yield self.assertFailure(acct.create_folder("inbox"), MailboxExists)

    @inlineCallbacks
    def test_hierarchy_rename_delete(self) -> Any:
        """Folders nest with '/', rename carries children, delete leaves children in place."""
        acct = yield self.make_store().open_account("alice")
        yield acct.create_folder("Archive/2026/Q1")
        yield acct.append("Archive/2026", MSG)
        infos = {i.name: i for i in (yield acct.list_folders())}
        self.assertTrue(infos["Archive/2026"].has_children)
        self.assertTrue(infos["Archive/2026/Q1"].selectable)
        yield acct.rename_folder("Archive/2026", "Old/v1.2")
        infos = {i.name: i for i in (yield acct.list_folders())}
        self.assertNotIn("Archive/2026", infos)
        self.assertIn("Old/v1.2/Q1", infos)
        st = yield acct.status("Old/v1.2")
        self.assertEqual(st.messages, 1)
        yield acct.delete_folder("Old/v1.2")
        infos = {i.name: i for i in (yield acct.list_folders())}
        self.assertFalse(infos["Old/v1.2"].selectable)
        self.assertIn("Old/v1.2/Q1", infos)
        yield self.assertFailure(acct.delete_folder("INBOX"), NoSuchMailbox)
        yield self.assertFailure(acct.rename_folder("Nope", "X"), NoSuchMailbox)
        yield self.assertFailure(acct.rename_folder("Sent", "Drafts"), MailboxExists)

    @inlineCallbacks
    def test_rename_inbox_moves_messages(self) -> Any:
        """Renaming INBOX moves its messages into the new folder and leaves INBOX empty."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        yield store.deliver("alice", msg(2))
        yield acct.rename_folder("INBOX", "Old")
        self.assertEqual((yield acct.status("INBOX")).messages, 0)
        self.assertEqual((yield acct.status("Old")).messages, 2)

    @inlineCallbacks
    def test_listeners_told_of_other_views_changes(self) -> Any:
        """A view's listener hears of deliveries and of other views' flag changes, not of its own."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        a = yield acct.open_folder("INBOX")
        b = yield acct.open_folder("INBOX")
        ra, rb = Recorder(), Recorder()
        a.add_listener(ra)
        b.add_listener(rb)
        yield store.deliver("alice", MSG)
        self.assertTrue(ra.calls and rb.calls)
        ca = yield a.refresh()
        cb = yield b.refresh()
        self.assertEqual((ca.added, cb.added), ((1,), (1,)))
        ra.calls.clear()
        rb.calls.clear()
        yield a.store_flags([1], frozenset({"\\Flagged"}), "add")
        self.assertEqual(ra.calls, [])
        self.assertEqual(rb.calls, [b])
        self.assertEqual(b.messages()[0].flags, frozenset())  # unchanged until refresh
        changes = yield b.refresh()
        self.assertEqual(changes.flags, {1: frozenset({"\\Flagged"})})
        yield a.store_flags([1], frozenset({"\\Deleted"}), "add")
        yield a.expunge()
        changes = yield b.refresh()
        self.assertEqual(changes.expunged, (1,))
        yield self.assertFailure(b.open_message(1), MessageExpunged)
        a.remove_listener(ra)
        a.close()
        b.close()

    @inlineCallbacks
    def test_recent_is_per_session(self) -> Any:
        """A new message is \\Recent in the first read-write session that sees it only; EXAMINE does not claim."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        ro = yield acct.open_folder("INBOX", readonly=True)
        self.assertEqual(ro.recent_uids(), {1})
        self.assertEqual((yield acct.status("INBOX")).recent, 1)
        a = yield acct.open_folder("INBOX")
        self.assertEqual(a.recent_uids(), {1})
        b = yield acct.open_folder("INBOX")
        self.assertEqual(b.recent_uids(), frozenset())
        yield store.deliver("alice", msg(2))
        yield b.refresh()
        yield a.refresh()
        self.assertEqual(b.recent_uids(), {2})
        self.assertEqual(a.recent_uids(), {1})
        self.assertEqual((yield acct.status("INBOX")).recent, 0)
        for v in (ro, a, b):
            v.close()

    @inlineCallbacks
    def test_readonly_refuses_changes(self) -> Any:
        """An EXAMINEd view refuses STORE, EXPUNGE and MOVE with ReadOnlyFolder but allows COPY."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", MSG)
        ro = yield acct.open_folder("INBOX", readonly=True)
        self.assertTrue(ro.readonly)
        yield self.assertFailure(ro.store_flags([1], frozenset({"\\Seen"}), "add"), ReadOnlyFolder)
        yield self.assertFailure(ro.expunge(), ReadOnlyFolder)
        yield self.assertFailure(ro.move([1], "Trash"), ReadOnlyFolder)
        r = yield ro.copy([1], "Trash")
        self.assertEqual(r.pairs, ((1, 1),))
        ro.close()

    @inlineCallbacks
    def test_copy_and_move(self) -> Any:
        """COPY keeps the source and flags; MOVE removes the source; both report UIDPLUS pairs."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        for i in range(3):
            yield store.deliver("alice", msg(i))
        f = yield acct.open_folder("INBOX")
        yield f.store_flags([2], frozenset({"\\Seen", "work"}), "set")
        c = yield f.copy([2, 3, 99], "Archive")
        self.assertEqual(c.pairs, ((2, 1), (3, 2)))
        self.assertEqual(c.uid_validity, (yield acct.status("Archive")).uid_validity)
        m = yield f.move([1, 2], "Trash")
        self.assertEqual(m.pairs, ((1, 1), (2, 2)))
        self.assertEqual([x.uid for x in f.messages()], [3])
        t = yield acct.open_folder("Trash")
        self.assertEqual([(x.uid, x.flags) for x in t.messages()],
                         [(1, frozenset()), (2, frozenset({"\\Seen", "work"}))])
        self.assertEqual((yield read_message(t, 1)), msg(0))
        yield self.assertFailure(f.copy([3], "Nope"), NoSuchMailbox)
        f.close()
        t.close()

    @inlineCallbacks
    def test_store_modes_and_expunge_subset(self) -> Any:
        """STORE set/add/remove compute new flags; UID EXPUNGE only removes the given \\Deleted uids."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        for i in range(3):
            yield store.deliver("alice", msg(i))
        f = yield acct.open_folder("INBOX")
        r = yield f.store_flags([1, 2, 3], frozenset({"\\Deleted", "\\Seen"}), "set")
        self.assertEqual(r[1], frozenset({"\\Deleted", "\\Seen"}))
        r = yield f.store_flags([1], frozenset({"\\Seen"}), "remove")
        self.assertEqual(r, {1: frozenset({"\\Deleted"})})
        gone = yield f.expunge([1, 3])
        self.assertEqual(gone, [1, 3])
        self.assertEqual([m.uid for m in f.messages()], [2])
        st = yield acct.status("INBOX")
        self.assertEqual((st.messages, st.unseen), (1, 0))
        f.close()

    @inlineCallbacks
    def test_quota(self) -> Any:
        """Deliveries beyond the message or byte quota fail with QuotaExceeded; usage is reported."""
        store = self.make_store(quota_messages=2, quota_bytes=10_000)
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        yield store.deliver("alice", msg(2))
        yield self.assertFailure(store.deliver("alice", msg(3)), QuotaExceeded)
        q = acct.quota()
        self.assertEqual((q.messages_used, q.messages_limit, q.bytes_limit), (2, 2, 10_000))
        self.assertEqual(q.bytes_used, len(msg(1)) + len(msg(2)))
        yield self.assertFailure(acct.append("INBOX", b"x" * 20_000), QuotaExceeded)

    @inlineCallbacks
    def test_subscriptions(self) -> Any:
        """Subscribe and unsubscribe names."""
        acct = yield self.make_store().open_account("alice")
        yield acct.subscribe("Lists/twisted")
        self.assertIn("Lists/twisted", (yield acct.subscriptions()))
        yield acct.unsubscribe("Lists/twisted")
        self.assertNotIn("Lists/twisted", (yield acct.subscriptions()))
        yield self.assertFailure(acct.subscribe("../x"), InvalidMailboxName)

    @inlineCallbacks
    def test_unicode_folder_names(self) -> Any:
        """Unicode folder names round-trip through create, list and append."""
        acct = yield self.make_store().open_account("alice")
        yield acct.create_folder("Entwürfe/日本")
        yield acct.append("Entwürfe/日本", MSG)
        names = [i.name for i in (yield acct.list_folders())]
        self.assertIn("Entwürfe/日本", names)
        self.assertEqual((yield acct.status("Entwürfe/日本")).messages, 1)
