"""Maildir store on real files: layout, other programs' files, restarts, rebuilds, faults."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from mailgw.errors import InvalidMailboxName, StorageUnavailable
from mailgw.store.maildir import layout
from tests.store.maildir_helpers import MaildirFixture
from tests.store.store_contract import msg, read_message

EXTERNAL = b"From: lda@example.com\nSubject: dropped in\n\nline one\nline two\n"


def files(path: str) -> list[str]:
    out = []
    for sub in ("new", "cur"):
        out += [f"{sub}/{n}" for n in sorted(os.listdir(os.path.join(path, sub)))]
    return out


class Events:
    """Collects twisted.logger events with an `event` key while installed."""

    def __init__(self, case: TestCase) -> None:
        self.seen: list[str] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        if "event" in event:
            self.seen.append(event["event"])


class MaildirLayoutTests(MaildirFixture, TestCase):
    """What lands on disk, in the places other Maildir tools expect."""

    @inlineCallbacks
    def test_layout_and_file_names(self) -> Any:
        """Delivery goes to new/, APPEND to cur/ with :2, letters; folders are Maildir++ dot directories."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        root = os.path.join(self.root, "alice")
        self.assertEqual(sorted(e for e in os.listdir(root) if e.startswith(".")),
                         [".Archive", ".Drafts", ".Junk", ".Sent", ".Trash"])
        self.assertTrue(os.path.exists(os.path.join(root, ".Sent", "maildirfolder")))
        yield acct.create_folder("Archive/2026")
        self.assertTrue(os.path.isdir(os.path.join(root, ".Archive.2026", "cur")))
        yield store.deliver("alice", msg(1))
        [new] = files(root)
        self.assertTrue(new.startswith("new/") and new.endswith(f",S={len(msg(1))},W={len(msg(1))}"), new)
        self.assertIn(".test.example,", new)
        yield acct.append("Sent", msg(2), frozenset({"\\Seen", "\\Answered", "$Forwarded"}))
        [cur] = files(os.path.join(root, ".Sent"))
        self.assertTrue(cur.startswith("cur/") and cur.endswith(":2,RS"), cur)
        with open(os.path.join(root, ".Sent", "mailgw-keywords")) as fh:
            self.assertEqual(fh.read(), "1 $Forwarded\n")
        self.assertEqual(os.listdir(os.path.join(root, "tmp")), [])

    @inlineCallbacks
    def test_select_moves_new_to_cur_and_flags_rename(self) -> Any:
        """A read-write SELECT moves new/ files to cur/; STORE renames the info letters; UIDs stay."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        f = yield acct.open_folder("INBOX")
        root = os.path.join(self.root, "alice")
        [name] = files(root)
        self.assertTrue(name.startswith("cur/") and name.endswith(":2,"), name)
        yield f.store_flags([1], frozenset({"\\Flagged", "\\Seen"}), "add")
        [name] = files(root)
        self.assertTrue(name.endswith(":2,FS"), name)
        self.assertEqual((yield read_message(f, 1)), msg(1))
        f.close()

    @inlineCallbacks
    def test_copy_uses_hard_links(self) -> Any:
        """COPY links the file (one inode, two names); MOVE renames it away from the source."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        f = yield acct.open_folder("INBOX")
        yield f.copy([1], "Archive")
        root = os.path.join(self.root, "alice")
        [src] = files(root)
        self.assertEqual(os.stat(os.path.join(root, src)).st_nlink, 2)
        yield f.move([1], "Trash")
        self.assertEqual(files(root), [])
        self.assertEqual(len(files(os.path.join(root, ".Trash"))), 1)
        f.close()

    @inlineCallbacks
    def test_traversal_refused_and_nothing_outside(self) -> Any:
        """Traversal in folder or user names is refused and nothing appears outside the user's Maildir."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        before = sorted(os.listdir(self.root))
        for bad in ["../bob", "a/../../x", "/etc", "x/../../../tmp", "..", "a\x00b"]:
            yield self.assertFailure(acct.create_folder(bad), InvalidMailboxName)
            yield self.assertFailure(acct.append(bad, msg(1)), InvalidMailboxName)
        for user in ["../bob", "..", ".hidden", "a/b", "x\x00"]:
            yield self.assertFailure(store.open_account(user), InvalidMailboxName)
        self.assertEqual(sorted(os.listdir(self.root)), before)
        self.assertRaises(InvalidMailboxName, layout.user_root, "/srv/mail/{domain}/{user}", "a@..")
        self.assertEqual(layout.user_root("/srv/mail/{domain}/{user}", "al@example.com"),
                         "/srv/mail/example.com/al@example.com")


class MaildirExternalTests(MaildirFixture, TestCase):
    """Files written, renamed and removed by other programs."""

    @inlineCallbacks
    def test_other_process_writes_into_new(self) -> Any:
        """A message another process drops into new/ while a session is open gets the next UID on refresh."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        f = yield acct.open_folder("INBOX")
        root = os.path.join(self.root, "alice")
        script = ("import os,sys; r=sys.argv[1]; t=os.path.join(r,'tmp','99.X1.other');"
                  "open(t,'wb').write(sys.stdin.buffer.read()); os.rename(t, os.path.join(r,'new','99.X1.other'))")
        subprocess.run([sys.executable, "-c", script, root], input=EXTERNAL, check=True)
        changes = yield f.refresh()
        self.assertEqual(changes.added, (2,))
        self.assertEqual(f.recent_uids(), {1, 2})
        crlf = EXTERNAL.replace(b"\n", b"\r\n")
        [_, info] = f.messages()
        self.assertEqual(info.size, len(crlf))  # RFC822.SIZE counts CRLF octets
        self.assertEqual((yield read_message(f, 2)), crlf)
        self.assertEqual((yield f.header_bytes(2)), b"From: lda@example.com\r\nSubject: dropped in\r\n\r\n")
        f.close()

    @inlineCallbacks
    def test_poll_tells_idle_listeners(self) -> Any:
        """With polling on, a listener hears of a file another program drops in, without any refresh call."""
        store = self.make_store(poll_interval=0.05)
        acct = yield store.open_account("alice")
        f = yield acct.open_folder("INBOX")
        heard: Deferred[Any] = Deferred()

        class L:
            def folder_changed(self, folder: Any) -> None:
                if not heard.called:
                    heard.callback(folder)

        f.add_listener(L())  # starts polling: no refresh() call is needed
        root = os.path.join(self.root, "alice")
        with open(os.path.join(root, "new", "100.X2.other"), "wb") as fh:
            fh.write(EXTERNAL)
        heard.addTimeout(10, store.reactor)
        yield heard
        changes = yield f.refresh()
        self.assertEqual(changes.added, (1,))
        f.close()

    @inlineCallbacks
    def test_external_rename_and_delete(self) -> Any:
        """A flag rename by another tool keeps the UID and shows the flags; a removed file is an expunge."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        for i in range(3):
            yield acct.append("INBOX", msg(i))
        f = yield acct.open_folder("INBOX")
        cur = os.path.join(self.root, "alice", "cur")
        names = sorted(os.listdir(cur))
        os.rename(os.path.join(cur, names[0]), os.path.join(cur, names[0].split(":")[0] + ":2,ST"))
        os.unlink(os.path.join(cur, names[1]))
        changes = yield f.refresh()
        self.assertEqual(changes.flags, {1: frozenset({"\\Seen", "\\Deleted"})})
        self.assertEqual(changes.expunged, (2,))
        self.assertEqual([m.uid for m in f.messages()], [1, 3])
        f.close()

    @inlineCallbacks
    def test_tmp_leftovers_cleaned_after_36_hours(self) -> Any:
        """Opening a folder removes tmp/ files untouched for 36 hours and keeps younger ones."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        tmp = os.path.join(self.root, "alice", "tmp")
        old, young = os.path.join(tmp, "old"), os.path.join(tmp, "young")
        for p in (old, young):
            open(p, "wb").close()
        past = time.time() - 37 * 3600
        os.utime(old, (past, past))
        f = yield acct.open_folder("INBOX")
        self.assertEqual(os.listdir(tmp), ["young"])
        f.close()


class MaildirRestartTests(MaildirFixture, TestCase):
    """UID stability and index/UID-list recovery across store restarts."""

    @inlineCallbacks
    def populate(self) -> Any:
        store = self.make_store()
        acct = yield store.open_account("alice")
        for i in range(5):
            yield store.deliver("alice", msg(i))
        f = yield acct.open_folder("INBOX")
        yield f.store_flags([2], frozenset({"\\Seen", "work"}), "set")
        yield f.store_flags([3], frozenset({"\\Deleted"}), "set")
        yield f.expunge()
        status = yield acct.status("INBOX")
        f.close()
        yield store.close()
        return status, [(m.uid, m.flags, m.size) for m in f.messages()]

    @inlineCallbacks
    def reopen(self) -> Any:
        store = self.make_store()
        acct = yield store.open_account("alice")
        f = yield acct.open_folder("INBOX", readonly=True)
        status = yield acct.status("INBOX")
        listing = [(m.uid, m.flags, m.size) for m in f.messages()]
        f.close()
        return store, status, listing

    @inlineCallbacks
    def test_uids_stable_across_restart(self) -> Any:
        """A new store on the same files sees the same UIDVALIDITY, UIDNEXT, UIDs, flags and keywords."""
        before, listing = yield self.populate()
        _, after, listing2 = yield self.reopen()
        self.assertEqual((after.uid_validity, after.uid_next), (before.uid_validity, before.uid_next))
        self.assertEqual(listing2, listing)
        self.assertEqual([u for u, _, _ in listing2], [1, 2, 4, 5])
        self.assertEqual(listing2[1][1], frozenset({"\\Seen", "work"}))

    @inlineCallbacks
    def test_open_uses_index_not_files(self) -> Any:
        """With an index, opening trusts it: a file rewritten behind the store's back keeps its indexed size."""
        _, listing = yield self.populate()
        cur = os.path.join(self.root, "alice", "cur")
        victim = sorted(os.listdir(cur))[0]
        with open(os.path.join(cur, victim), "r+b") as fh:  # same name: the directory mtime does not move
            fh.write(b"X" * 1000)
        _, _, listing2 = yield self.reopen()
        self.assertEqual(listing2, listing)

    @inlineCallbacks
    def test_index_rebuilt_after_deletion(self) -> Any:
        """Deleting the index costs a rescan but keeps every UID, flag and keyword."""
        before, listing = yield self.populate()
        folder = os.path.join(self.root, "alice")
        for name in ("mailgw-index", "mailgw-index.headers"):
            os.unlink(os.path.join(folder, name))
        events = Events(self)
        _, after, listing2 = yield self.reopen()
        self.assertEqual(listing2, listing)
        self.assertEqual(after.uid_validity, before.uid_validity)
        self.assertIn("store.index_rebuilt", events.seen)

    @inlineCallbacks
    def test_damaged_index_and_header_cache_are_rebuilt(self) -> Any:
        """A truncated index or a wiped header cache costs a rescan or a file read, never a wrong answer."""
        _, listing = yield self.populate()
        folder = os.path.join(self.root, "alice")
        with open(os.path.join(folder, "mailgw-index"), "r+b") as fh:
            fh.truncate(40)
        _, _, listing2 = yield self.reopen()
        self.assertEqual(listing2, listing)
        with open(os.path.join(folder, "mailgw-index.headers"), "r+b") as fh:
            fh.write(b"\x00" * os.path.getsize(os.path.join(folder, "mailgw-index.headers")))
        store = self.make_store()
        acct = yield store.open_account("alice")
        f = yield acct.open_folder("INBOX", readonly=True)
        self.assertEqual((yield f.header_bytes(1)), b"From: a@example.com\r\nSubject: m0\r\n\r\n")
        f.close()

    @inlineCallbacks
    def test_corrupt_uidlist_gets_new_uidvalidity(self) -> Any:
        """A damaged UID list is rebuilt with a new UIDVALIDITY (logged), never silently renumbered."""
        before, _ = yield self.populate()
        path = os.path.join(self.root, "alice", "mailgw-uidlist")
        with open(path, "ab") as fh:
            fh.write(b"1 duplicate-uid-record\n")
        os.unlink(os.path.join(self.root, "alice", "mailgw-index"))  # the index cannot vouch for it either
        events = Events(self)
        _, after, listing = yield self.reopen()
        self.assertNotEqual(after.uid_validity, before.uid_validity)
        self.assertGreater(after.uid_validity, before.uid_validity)
        self.assertEqual(len(listing), 4)
        self.assertIn("store.uidlist_corrupt", events.seen)
        self.assertIn("store.uidlist_rebuilt", events.seen)

    @inlineCallbacks
    def test_missing_uidlist_gets_new_uidvalidity(self) -> Any:
        """A lost UID list is rebuilt with a new UIDVALIDITY and the messages numbered from 1."""
        before, _ = yield self.populate()
        os.unlink(os.path.join(self.root, "alice", "mailgw-uidlist"))
        _, after, listing = yield self.reopen()
        self.assertNotEqual(after.uid_validity, before.uid_validity)
        self.assertEqual([u for u, _, _ in listing], [1, 2, 3, 4])

    @inlineCallbacks
    def test_torn_uidlist_append_ignored(self) -> Any:
        """A half-written last record (a crash mid-append, never acknowledged) is dropped, not fatal."""
        before, listing = yield self.populate()
        with open(os.path.join(self.root, "alice", "mailgw-uidlist"), "ab") as fh:
            fh.write(b"6 123.torn")
        _, after, listing2 = yield self.reopen()
        self.assertEqual(after.uid_validity, before.uid_validity)
        self.assertEqual(listing2, listing)

    @inlineCallbacks
    def test_quota_usage_survives_restart(self) -> Any:
        """maildirsize keeps the usage across restarts when a quota is set."""
        store = self.make_store(quota_messages=10)
        yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        yield store.deliver("alice", msg(2))
        store2 = self.make_store(quota_messages=10)
        acct2 = yield store2.open_account("alice")
        self.assertEqual(acct2.quota().messages_used, 2)
        with open(os.path.join(self.root, "alice", "maildirsize")) as fh:
            self.assertEqual(fh.readline(), "0S,10C\n")


class MaildirFaultTests(MaildirFixture, TestCase):
    """Disk full and the reactor thread."""

    @inlineCallbacks
    def test_enospc_is_temporary_and_leaves_nothing(self) -> Any:
        """ENOSPC while writing is StorageUnavailable; nothing appears in new/ or cur/, tmp/ is empty; recovery works."""
        full = {"on": True}

        def writer(path: str, chunks: Any) -> None:
            if full["on"]:
                data = b"".join(chunks)
                with open(path, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            layout.write_file_durably(path, chunks)

        events = Events(self)
        store = self.make_store(writer=writer)
        acct = yield store.open_account("alice")
        failure = yield self.assertFailure(store.deliver("alice", msg(1)), StorageUnavailable)
        self.assertTrue(failure.temporary)
        yield self.assertFailure(acct.append("Sent", msg(1)), StorageUnavailable)
        root = os.path.join(self.root, "alice")
        self.assertEqual(files(root) + files(os.path.join(root, ".Sent")), [])
        self.assertEqual(os.listdir(os.path.join(root, "tmp")), [])
        self.assertIn("store.storage_error", events.seen)
        full["on"] = False
        r = yield store.deliver("alice", msg(1))
        self.assertEqual(r.uid, 1)

    @inlineCallbacks
    def test_reactor_thread_never_fsyncs(self) -> Any:
        """Every fsync during delivery, APPEND, STORE, COPY and EXPUNGE happens off the reactor thread."""
        main = threading.current_thread()
        on_reactor: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            if threading.current_thread() is main:
                on_reactor.append("fsync")
            real(fd)

        os.fsync = fsync
        self.addCleanup(setattr, os, "fsync", real)
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        yield acct.append("INBOX", msg(2))
        f = yield acct.open_folder("INBOX")
        yield f.store_flags([1, 2], frozenset({"\\Deleted"}), "add")
        yield f.copy([1], "Archive")
        yield f.expunge()
        f.close()
        yield store.close()
        self.assertEqual(on_reactor, [])


class MaildirMemoryTests(MaildirFixture, TestCase):
    """Idle folders are unloaded so memory stays bounded."""

    @inlineCallbacks
    def test_idle_folders_unloaded_and_reloaded(self) -> Any:
        """evict_idle saves and drops folders no session holds; they reload with the same UIDs and flags."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        held = yield acct.open_folder("Sent")
        f = yield acct.open_folder("INBOX")
        yield f.store_flags([1], frozenset({"\\Flagged"}), "add")
        f.close()
        evicted = yield store.evict_idle(0)
        self.assertEqual(evicted, 1)  # INBOX; Sent is still selected
        self.assertTrue(os.path.exists(os.path.join(self.root, "alice", "mailgw-index")))
        again = yield acct.open_folder("INBOX")
        self.assertEqual([(m.uid, m.flags) for m in again.messages()], [(1, frozenset({"\\Flagged"}))])
        again.close()
        held.close()


class MaildirTwoWritersTests(MaildirFixture, TestCase):
    """Two store instances on one Maildir (e.g. a second mailgw process) agree on UIDs."""

    @inlineCallbacks
    def test_second_store_sees_first_stores_uids(self) -> Any:
        """Deliveries and expunges through one store show up in the other's session with the same UIDs."""
        one, two = self.make_store(), self.make_store()
        acct1 = yield one.open_account("alice")
        yield one.deliver("alice", msg(1))
        acct2 = yield two.open_account("alice")
        view = yield acct2.open_folder("INBOX")
        self.assertEqual([m.uid for m in view.messages()], [1])
        r = yield one.deliver("alice", msg(2))
        r3 = yield two.deliver("alice", msg(3))
        self.assertEqual((r.uid, r3.uid), (2, 3))
        changes = yield view.refresh()
        self.assertEqual(changes.added, (2, 3))
        f1 = yield acct1.open_folder("INBOX")
        self.assertEqual([m.uid for m in f1.messages()], [1, 2, 3])
        yield f1.store_flags([1], frozenset({"\\Deleted"}), "add")
        yield f1.expunge()
        changes = yield view.refresh()
        self.assertEqual(changes.expunged, (1,))
        self.assertEqual((yield read_message(view, 3)), msg(3))
        f1.close()
        view.close()


class MaildirUnfinishedFileTests(MaildirFixture, TestCase):
    """A file copied straight into new/ is not given a UID while it is still being written."""

    @inlineCallbacks
    def test_half_written_file_waits(self) -> Any:
        """An empty (or ,S=-mismatched) fresh file in new/ gets no UID until it is complete."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        f = yield acct.open_folder("INBOX")
        new = os.path.join(self.root, "alice", "new")
        complete = msg(7)
        path = os.path.join(new, f"200.X3.other,S={len(complete)}")
        with open(path, "wb") as fh:
            fh.write(complete[:10])
        open(os.path.join(new, "201.X4.other"), "wb").close()
        changes = yield f.refresh()
        self.assertEqual(changes.added, ())
        with open(path, "ab") as fh:
            fh.write(complete[10:])
        changes = yield f.refresh()  # new/ is rescanned although its mtime did not move
        self.assertEqual(changes.added, (1,))
        self.assertEqual((yield read_message(f, 1)), complete)
        past = time.time() - 60
        os.utime(os.path.join(new, "201.X4.other"), (past, past))
        changes = yield f.refresh()
        self.assertEqual(changes.added, (2,))  # an old empty file is a (strange) message after all
        f.close()


class MaildirLostUidListTests(MaildirFixture, TestCase):
    """The UID list vanishing under an open session."""

    @inlineCallbacks
    def test_open_session_sees_new_uidvalidity(self) -> Any:
        """After the UID list is lost while a folder is selected, refresh() shows the new UIDVALIDITY."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        yield store.deliver("alice", msg(1))
        f = yield acct.open_folder("INBOX")
        old = f.uid_validity
        os.unlink(os.path.join(self.root, "alice", "mailgw-uidlist"))
        yield f.refresh()
        self.assertGreater(f.uid_validity, old)
        self.assertEqual([m.uid for m in f.messages()], [1])
        f.close()


class MaildirShutdownTests(TestCase):
    """StoreService saves indexes although MultiService stops the pool right after it."""

    timeout = 30

    @inlineCallbacks
    def test_shutdown_saves_index_before_pool_stops(self) -> Any:
        """Stopping [pool, StoreService] in a MultiService leaves a saved index for every loaded folder."""
        import tempfile

        from twisted.application.service import MultiService, Service
        from twisted.internet import reactor
        from twisted.python.threadpool import ThreadPool

        from mailgw.store.maildir import MaildirStore
        from mailgw.store.service import StoreService

        tmp = tempfile.mkdtemp(prefix="mailgw-store-")
        pool = ThreadPool(1, 2, name="store-shutdown")

        class PoolService(Service):
            def startService(self) -> None:
                super().startService()
                pool.start()

            def stopService(self) -> None:
                super().stopService()
                pool.stop()

        store = MaildirStore(tmp + "/{user}", reactor, pool, poll_interval=0, idle_unload=0)
        root = MultiService()
        PoolService().setServiceParent(root)
        StoreService(store).setServiceParent(root)
        root.startService()
        try:
            yield store.deliver("alice", msg(1))
            acct = yield store.open_account("alice")
            f = yield acct.open_folder("INBOX")
            yield f.store_flags([1], frozenset({"\\Flagged"}), "add")  # unsaved: indexes are saved lazily
            yield acct.append("Sent", msg(2))
            sent = yield acct.open_folder("Sent")
            yield sent.store_flags([1], frozenset({"\\Answered"}), "add")
        finally:
            yield root.stopService()
        from mailgw.store.maildir import index as idx

        state = idx.load(os.path.join(tmp, "alice"))
        assert state is not None
        self.assertTrue(state.recs[1].name.endswith(":2,F"))
        state = idx.load(os.path.join(tmp, "alice", ".Sent"))
        assert state is not None
        self.assertTrue(state.recs[1].name.endswith(":2,R"))
