"""mailgw.files' durable writes: whole new content or the old, never a half file or a leftover temporary."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from mailgw import files

# Run in a child: a file size limit makes the write fail for real (EFBIG) once 4 KiB are written.
FAILING_WRITE = """
import os, resource, signal, sys
from mailgw import files
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    getattr(files, sys.argv[1])(sys.argv[2], b"n" * 100000)
except OSError as exc:
    print(exc.errno)
"""


class DurableWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mailgw-files-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "f")

    def test_durable_replace_replaces_and_leaves_nothing_else(self) -> None:
        """A replaced file holds the new bytes, is 0600 when new, and no temporary is left beside it."""
        files.durable_replace(self.path, b"one")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        files.durable_replace(self.path, b"two", tmp=os.path.join(self.dir, "elsewhere.tmp"))
        with open(self.path, "rb") as handle:
            self.assertEqual(handle.read(), b"two")
        self.assertEqual(os.listdir(self.dir), ["f"])

    def test_leftover_temporary_is_replaced(self) -> None:
        """A temporary left by a crashed write (any mode) does not leak its mode or bytes into the new file."""
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "wb") as handle:
            handle.write(b"stale stale stale")
        os.chmod(tmp, 0o666)
        files.durable_replace(self.path, b"new")
        with open(self.path, "rb") as handle:
            self.assertEqual(handle.read(), b"new")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_create_durably_never_replaces(self) -> None:
        """create_durably writes a new file whole, and refuses an existing one as O_EXCL does, leaving it as it was."""
        files.create_durably(self.path, b"key")
        with self.assertRaises(FileExistsError):
            files.create_durably(self.path, b"other")
        with open(self.path, "rb") as handle:
            self.assertEqual(handle.read(), b"key")
        self.assertEqual(os.listdir(self.dir), ["f"])

    def test_failed_write_keeps_the_old_file(self) -> None:
        """A write that fails part way (file size limit: EFBIG) leaves the old content and no temporary file."""
        for function in ("durable_replace", "create_durably"):
            with self.subTest(function=function):
                files.durable_replace(self.path, b"old")
                target = self.path if function == "durable_replace" else self.path + ".new"
                env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                done = subprocess.run([sys.executable, "-c", FAILING_WRITE, function, target], env=env,
                                      capture_output=True, text=True, timeout=30)
                self.assertEqual(done.stdout.strip(), "27", done.stderr)  # EFBIG
                with open(self.path, "rb") as handle:
                    self.assertEqual(handle.read(), b"old")
                self.assertEqual(os.listdir(self.dir), ["f"])
