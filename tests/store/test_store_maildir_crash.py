"""kill -9 during delivery: every acknowledged message survives intact, no partial message is ever visible."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from tests.store.store_contract import read_message
from tests.store.maildir_helpers import MaildirFixture
from tests.store.store_crash_child import check_message

ROUNDS = 50
CHILD = os.path.join(os.path.dirname(__file__), "store_crash_child.py")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
class CrashLoopTests(MaildirFixture, TestCase):
    """A delivering child process is killed with SIGKILL at random moments, 50 times."""

    timeout = 120

    @inlineCallbacks
    def test_kill_minus_nine_loop(self) -> Any:
        """After 50 SIGKILLs, every ACKed delivery is present with its UID and bytes, and nothing partial is visible."""
        rng = random.Random(os.environ.get("MAILGW_CRASH_SEED", "mailgw"))
        acked: dict[int, int] = {}  # uid -> message number
        validity = None
        env = dict(os.environ, PYTHONPATH=REPO)
        for round_no in range(ROUNDS):
            child = subprocess.Popen([sys.executable, CHILD, self.root, str(round_no * 100_000)],
                                     stdout=subprocess.PIPE, env=env, cwd=REPO)
            assert child.stdout is not None
            self.assertEqual(child.stdout.readline(), b"READY\n")
            want = rng.randint(0, 6)
            for _ in range(want):
                line = child.stdout.readline().split()
                v, uid, n = int(line[1]), int(line[2]), int(line[3])
                validity = validity or v
                self.assertEqual(v, validity)
                self.assertNotIn(uid, acked)
                acked[uid] = n
            time.sleep(rng.random() * 0.02)  # the random moment of the kill, not synchronisation
            os.kill(child.pid, signal.SIGKILL)
            rest = child.stdout.read()  # ACKs written before the kill count as acknowledged
            for line in rest.splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] == b"ACK":
                    acked[int(parts[2])] = int(parts[3])
            child.wait()
        self.assertGreater(len(acked), ROUNDS)

        root = os.path.join(self.root, "u")
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(root, sub)):
                with open(os.path.join(root, sub, name), "rb") as fh:
                    check_message(fh.read())  # a visible file is always complete

        store = self.make_store()
        acct = yield store.open_account("u")
        f = yield acct.open_folder("INBOX", readonly=True)
        self.assertEqual(f.uid_validity, validity)
        present = {m.uid: m for m in f.messages()}
        for uid, n in acked.items():
            self.assertIn(uid, present, f"acknowledged uid {uid} lost")
            data = (yield read_message(f, uid))
            self.assertEqual(check_message(data), n)
            self.assertEqual(len(data), present[uid].size)
        seen = []
        for u in present:
            seen.append(check_message((yield read_message(f, u))))
        self.assertEqual(len(seen), len(set(seen)))  # no message counted twice
        f.close()


def _strace_works() -> bool:
    strace = shutil.which("strace")
    if strace is None:
        return False
    r = subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "-e", "inject=getpid:signal=SIGKILL:when=1",
                        sys.executable, "-c", "import os; os.getpid()"], capture_output=True)
    return r.returncode in (-9, 137)


@pytest.mark.slow
class DeterministicKillTests(MaildirFixture, TestCase):
    """SIGKILL injected by strace at the Nth fsync, link or rename of a delivering process."""

    timeout = 120

    @inlineCallbacks
    def test_kill_at_each_durability_step(self) -> Any:
        """A kill at any fsync/link/rename loses nothing acknowledged and never exposes a partial message."""
        if not _strace_works():
            raise SkipTest("strace fault injection is not available (no strace or no ptrace permission)")
        env = dict(os.environ, PYTHONPATH=REPO)
        # sys.executable, not its realpath: a virtualenv's interpreter is a symlink whose target
        # lacks the environment's packages (the child would die on import, not by the injected kill)
        python = sys.executable
        acked: dict[int, int] = {}
        killed = ready = 0
        points = [("fsync", n) for n in range(1, 13)] + [("link", n) for n in range(1, 5)] + \
                 [("rename", n) for n in range(1, 7)]
        for i, (call, when) in enumerate(points):
            r = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"inject={call}:signal=SIGKILL:when={when}",
                                python, CHILD, self.root, str((i + 1) * 1000), "3"],
                               capture_output=True, env=env, cwd=REPO, timeout=60)
            was_killed = r.returncode in (-9, 137)
            killed += was_killed
            ready += b"READY" in r.stdout.splitlines()
            if not was_killed:  # the kill point lay past its last call: it must have run to the end
                self.assertEqual((r.returncode, b"READY" in r.stdout.splitlines()), (0, True), r.stderr.decode()[-2000:])
            for line in r.stdout.splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] == b"ACK":
                    self.assertNotIn(int(parts[2]), acked)
                    acked[int(parts[2])] = int(parts[3])
            root = os.path.join(self.root, "u")
            for sub in ("new", "cur"):
                for name in os.listdir(os.path.join(root, sub)) if os.path.isdir(os.path.join(root, sub)) else []:
                    with open(os.path.join(root, sub, name), "rb") as fh:
                        check_message(fh.read())
        self.assertGreaterEqual(killed, len(points) // 3)  # later points may lie past the last call of a run
        self.assertGreater(ready, 0)  # the children got as far as delivering, so the kills hit deliveries
        store = self.make_store()
        acct = yield store.open_account("u")
        f = yield acct.open_folder("INBOX", readonly=True)
        present = {m.uid for m in f.messages()}
        for uid, n in acked.items():
            self.assertIn(uid, present)
            self.assertEqual(check_message((yield read_message(f, uid))), n)
        f.close()
