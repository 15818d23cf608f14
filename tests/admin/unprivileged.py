"""Run a process as an unprivileged uid/gid (setpriv), with this test interpreter reachable for it.

The interpreter may live under a directory others cannot enter (pyenv under /root, mode 0700). Then
the command runs in a private mount namespace where that directory is replaced by a 0755 tmpfs
holding only the interpreter's tree, bind-mounted back at the same path: nothing else of it is
visible, and the host's mounts are untouched. Needs root (the tests that use it skip otherwise).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

from tests.support.gateway import Gateway, environment, twistd_command


def _closed_ancestor(path: str) -> Optional[tuple[str, str]]:
    """(directory others cannot enter, its child on the way to `path`), or None when the way is open."""
    parts = os.path.realpath(path).split(os.sep)
    for depth in range(2, len(parts)):
        directory = os.sep.join(parts[:depth]) or os.sep
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory, os.sep.join(parts[:depth + 1])
    return None


def as_user(uid: int, gid: int, argv: list[str], scratch: str) -> list[str]:
    """argv that runs `argv` as uid:gid with no supplementary groups (systemd's User=/Group=)."""
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    closed = _closed_ancestor(sys.prefix) or _closed_ancestor(sys.executable)
    if closed is None:
        return setpriv + argv
    hidden, keep = closed
    save = tempfile.mkdtemp(prefix="interp-", dir=scratch)
    script = ('set -e; mount --bind "$1" "$2"; mount -t tmpfs -o mode=0755 tmpfs "$3"; mkdir -p "$1"; '
              'mount --bind "$2" "$1"; shift 3; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", keep, save, hidden,
            *setpriv, *argv]


class UnprivilegedGateway(Gateway):
    """`twistd -n mailgw --config C` as uid:gid (what `User=`/`Group=` of the unit do)."""

    def __init__(self, config_path: str, cwd: str, uid: int, gid: int, scratch: str,
                 env: Optional[dict[str, str]] = None) -> None:
        super().__init__(config_path, cwd, env)
        self.uid, self.gid, self.scratch = uid, gid, scratch

    def start(self, expect: int = 1, timeout: float = 30.0) -> "Gateway":
        argv = as_user(self.uid, self.gid, twistd_command("mailgw", "--config", self.config_path or ""), self.scratch)
        self.process = subprocess.Popen(argv, cwd=self.cwd, env=environment(self.env), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.ports) < expect and self.process.poll() is None and time.monotonic() < deadline:
                self._lock.wait(0.05)
        if len(self.ports) < expect:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + "".join(self.output))
        return self


def run_as(uid: int, gid: int, argv: list[str], scratch: str, env: Optional[dict[str, str]] = None,
           cwd: Optional[str] = None) -> "subprocess.CompletedProcess[str]":
    """Run `argv` to completion as uid:gid."""
    return subprocess.run(as_user(uid, gid, argv, scratch), capture_output=True, text=True, timeout=120,
                          env=environment(env), cwd=cwd)
