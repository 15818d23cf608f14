"""Start the real `twistd -n mailgw` process for integration tests and find the ports it bound.

Listeners bind port 0 in test configs; the gateway logs `listening on <address> for <label>` with
the config key as label (e.g. `imap.t.bind_tls[0]`), which is how tests learn the real ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LISTEN = re.compile(r"listening on .*?port=(\d+)\) for (\S+)")


def twistd_command(*args: str) -> list[str]:
    """argv running twistd from this checkout's interpreter (its twisted/plugins is on PYTHONPATH)."""
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
            "-n", "--pidfile=", *args]


# A private network namespace with its own loopback: fixed ports (the development default's 1143,
# 1993, 1587, 1465, 8025, 2222) are free there whatever else runs on the machine. Root needs no
# user namespace; others map themselves to root in a new one.
PRIVATE_NETWORK = ("unshare", "--net", *(() if os.geteuid() == 0 else ("--user", "--map-root-user")), "--",
                   "sh", "-c", 'ip link set lo up && exec "$@"', "sh")


def environment(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


class Gateway:
    """One gateway process; `ports[label]` once started; output kept in `output`."""

    def __init__(self, config_path: Optional[str], cwd: str, env: Optional[dict[str, str]] = None,
                 prefix: tuple[str, ...] = ()) -> None:
        self.config_path, self.cwd, self.env = config_path, cwd, env
        self.prefix = prefix  # argv run before twistd, e.g. PRIVATE_NETWORK
        self.process: Optional[subprocess.Popen] = None
        self.ports: dict[str, int] = {}
        self.output: list[str] = []
        self._lock = threading.Condition()

    def start(self, expect: int = 1, timeout: float = 30.0) -> "Gateway":
        """Spawn and wait until `expect` listeners are bound (or the process exits)."""
        args = ["mailgw"] + (["--config", self.config_path] if self.config_path else [])
        self.process = subprocess.Popen([*self.prefix, *twistd_command(*args)], cwd=self.cwd, env=environment(self.env),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.ports) < expect and self.process.poll() is None and time.monotonic() < deadline:
                self._lock.wait(0.05)
        if len(self.ports) < expect:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + "".join(self.output))
        return self

    def _read(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            with self._lock:
                self.output.append(line)
                match = _LISTEN.search(line)
                if match:
                    self.ports[match.group(2)] = int(match.group(1))
                self._lock.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Wait for an output line containing `text`; return it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while time.monotonic() < deadline:
                for line in self.output:
                    if text in line:
                        return line
                if self.process is None or self.process.poll() is not None:
                    break
                self._lock.wait(0.05)
        raise RuntimeError(f"no line with {text!r}:\n" + "".join(self.output))

    def port(self, label: str) -> int:
        return self.ports[label]

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode
