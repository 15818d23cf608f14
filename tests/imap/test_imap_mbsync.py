"""mbsync (isync) full and incremental sync of a 1,000-message folder over IMAPS and STARTTLS."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.imap.imap_live import PASSWORD, LiveServer, certificate

COUNT = 1000


def _message(i: int) -> bytes:
    return (b"From: Sender %d <s%d@example.test>\r\nTo: alice@example.test\r\nSubject: message %d\r\n"
            b"Message-ID: <%d@example.test>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\n" % (i, i, i, i)
            + b"line of body text %d\r\n" % i * (1 + i % 20))


def _config(port: int, root: str, ssl_type: str) -> str:
    return f"""IMAPAccount live
Host 127.0.0.1
Port {port}
User alice
Pass {PASSWORD}
SSLType {ssl_type}
CertificateFile {certificate()[0]}

IMAPStore remote
Account live

MaildirStore local
Path {root}/
Inbox {root}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Near
SyncState *
"""


def _count_files(root: str) -> int:
    total = 0
    for sub in ("cur", "new"):
        path = os.path.join(root, "INBOX", sub)
        if os.path.isdir(path):
            total += len(os.listdir(path))
    return total


class MbsyncTests(unittest.TestCase):
    """mbsync pulls everything once and nothing the second time."""

    timeout = 240

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)
        account = self.server.store.account("alice")
        for i in range(COUNT):
            account.append("INBOX", _message(i))
        self.root = tempfile.mkdtemp(prefix="mailgw-mbsync-")
        self.addCleanup(shutil.rmtree, self.root, True)

    def _mbsync(self, port: int, ssl_type: str, debug: bool = False) -> Any:
        conf = os.path.join(self.root, "mbsyncrc")
        with open(conf, "w") as f:
            f.write(_config(port, self.root, ssl_type))
        return deferToThread(subprocess.run, ["mbsync", "-D" if debug else "-q", "-c", conf, "sync"],
                             capture_output=True, timeout=200)

    def test_full_then_incremental(self) -> Any:
        """A full sync stores 1,000 messages byte for byte; a second sync fetches no message."""
        def first(res: Any) -> Any:
            self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace")[-2000:])
            self.assertEqual(_count_files(self.root), COUNT)
            bodies = set()
            for sub in ("cur", "new"):
                d = os.path.join(self.root, "INBOX", sub)
                for name in os.listdir(d):
                    with open(os.path.join(d, name), "rb") as f:
                        data = f.read().replace(b"\r\n", b"\n")
                    # mbsync adds its own X-TUID header line while syncing
                    bodies.add(b"".join(l for l in data.splitlines(True) if not l.startswith(b"X-TUID:")))
            expected = {_message(i).replace(b"\r\n", b"\n") for i in range(COUNT)}
            self.assertEqual(len(bodies ^ expected), 0, "stored messages differ from the served ones")
            return self._mbsync(self.server.tls_port, "IMAPS", debug=True)

        def second(res: Any) -> None:
            self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace")[-2000:])
            out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
            self.assertEqual(_count_files(self.root), COUNT)
            self.assertIn("UID FETCH 1:1000 (UID FLAGS)", out)
            self.assertNotIn("BODY.PEEK[]", out)

        d = self._mbsync(self.server.tls_port, "IMAPS")
        d.addCallback(first)
        d.addCallback(second)
        return d

    def test_starttls_sync(self) -> Any:
        """mbsync with SSLType STARTTLS on the plain port syncs the folder."""
        def check(res: Any) -> None:
            self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace")[-2000:])
            self.assertEqual(_count_files(self.root), COUNT)

        return self._mbsync(self.server.plain_port, "STARTTLS").addCallback(check)


class MbsyncPushTests(unittest.TestCase):
    """mbsync pushes local changes back: flags (UID STORE), deletions (EXPUNGE) and new mail (APPEND)."""

    timeout = 120

    def setUp(self) -> None:
        self.server = LiveServer(_reactor)
        self.addCleanup(self.server.stop)
        account = self.server.store.account("alice")
        for i in range(20):
            account.append("INBOX", _message(i))
        self.root = tempfile.mkdtemp(prefix="mailgw-mbsync-push-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.conf = os.path.join(self.root, "mbsyncrc")
        with open(self.conf, "w") as f:
            f.write(_config(self.server.tls_port, self.root, "IMAPS") + "Expunge Both\n")

    def _mbsync(self) -> Any:
        return deferToThread(subprocess.run, ["mbsync", "-q", "-c", self.conf, "sync"], capture_output=True,
                             timeout=100)

    def _local_changes(self) -> None:
        files = []
        for sub in ("cur", "new"):
            d = os.path.join(self.root, "INBOX", sub)
            files += [(d, n) for n in sorted(os.listdir(d))]
        by_subject = {}
        for d, n in files:
            with open(os.path.join(d, n), "rb") as f:
                head = f.read(400)
            for line in head.split(b"\n"):
                if line.startswith(b"Subject: "):
                    by_subject[line[9:].strip()] = (d, n)
        cur = os.path.join(self.root, "INBOX", "cur")

        def flag(subject: bytes, letter: str) -> None:
            d, n = by_subject[subject]
            base, _, flags = n.partition(":2,")
            os.rename(os.path.join(d, n), os.path.join(cur, base + ":2," + "".join(sorted(set(flags + letter)))))

        flag(b"message 3", "S")
        flag(b"message 7", "T")
        with open(os.path.join(self.root, "INBOX", "new", "1700000000.local.test"), "wb") as f:
            f.write(b"From: alice@example.test\r\nSubject: written locally\r\n\r\nnew\r\n")

    def test_push_changes(self) -> None:
        """After local changes, the server has \\Seen on one message, another expunged and the local one appended."""
        def first(res: Any) -> Any:
            self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace")[-2000:])
            self._local_changes()
            return self._mbsync()

        def second(res: Any) -> None:
            self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace")[-2000:])
            folder = self.server.store.account("alice").folder("INBOX")
            subjects = {}
            for uid, stored in folder.stored.items():
                subject = [l for l in stored.data.split(b"\r\n") if l.startswith(b"Subject: ")][0][9:]
                subjects[subject] = stored.flags
            self.assertIn("\\Seen", subjects[b"message 3"])
            self.assertNotIn(b"message 7", subjects)
            self.assertIn(b"written locally", subjects)
            self.assertEqual(len(subjects), 20)

        return self._mbsync().addCallback(first).addCallback(second)
