"""A real full disk: a 1 MiB tmpfs (skipped where mounting is not permitted)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SkipTest, TestCase

from mailgw.errors import StorageUnavailable
from mailgw.store.maildir.account import MaildirStore
from tests.store.store_contract import read_message
from tests.store.store_crash_child import check_message, make_message


class FullDiskTests(TestCase):
    """ENOSPC from a real file system."""

    def setUp(self) -> None:
        self.mnt = tempfile.mkdtemp(prefix="mailgw-tmpfs-")
        self.addCleanup(os.rmdir, self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", self.mnt], capture_output=True)
        if r.returncode != 0:
            raise SkipTest(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt], check=False)
        self.pool = ThreadPool(1, 2, name="store-tmpfs")
        self.pool.start()
        self.addCleanup(self.pool.stop)

    @inlineCallbacks
    def test_disk_full_then_space_returns(self) -> Any:
        """Filling the disk gives StorageUnavailable with nothing partial visible; after an expunge delivery works again."""
        store = MaildirStore(self.mnt + "/{user}", reactor, self.pool, hostname="tmpfs.test", poll_interval=0)
        acct = yield store.open_account("u")
        delivered = []
        for n in range(1, 200):
            try:
                r = yield store.deliver("u", make_message(n, 30_000))
            except StorageUnavailable as e:
                self.assertTrue(e.temporary)
                break
            delivered.append(r.uid)
        else:
            self.fail("the disk never filled")
        self.assertGreater(len(delivered), 5)
        root = os.path.join(self.mnt, "u")
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(root, sub)):
                with open(os.path.join(root, sub, name), "rb") as fh:
                    check_message(fh.read())
        self.assertEqual(os.listdir(os.path.join(root, "tmp")), [])
        f = yield acct.open_folder("INBOX")
        self.assertEqual([m.uid for m in f.messages()], delivered)
        yield f.store_flags(delivered[:3], frozenset({"\\Deleted"}), "add")
        yield f.expunge()
        r = yield store.deliver("u", make_message(999, 30_000))
        self.assertGreater(r.uid, delivered[-1])
        yield f.refresh()
        self.assertEqual(check_message((yield read_message(f, r.uid))), 999)
        f.close()
        yield store.close()
