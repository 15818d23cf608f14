"""etc/systemd: the unit verifies with systemd-analyze, is hardened as ecosystem.md §2 asks, and scores as exposure OK."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.helpers_ops import tempdir
from tests.support.gateway import REPO

UNITS = os.path.join(REPO, "etc", "systemd")


def settings(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in open(os.path.join(UNITS, name)):
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


class UnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed (apt-get install systemd)")
        self.dir = tempdir(self)
        for name in ("mailgw.service", "mailgw.socket"):
            shutil.copy(os.path.join(UNITS, name), self.dir)

    def test_verify(self) -> None:
        """`systemd-analyze verify` accepts mailgw.service and mailgw.socket without a warning."""
        result = subprocess.run(["systemd-analyze", "verify", os.path.join(self.dir, "mailgw.service"),
                                 os.path.join(self.dir, "mailgw.socket")], capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertNotIn("mailgw", result.stderr, result.stderr)

    def test_security_exposure(self) -> None:
        """`systemd-analyze security` rates the unit's exposure below 3.0 ("OK")."""
        result = subprocess.run(["systemd-analyze", "security", "--offline=yes", os.path.join(self.dir, "mailgw.service")],
                                capture_output=True, text=True, timeout=120)
        match = re.search(r"Overall exposure level for mailgw.service: ([0-9.]+)", result.stdout)
        self.assertIsNotNone(match, result.stdout + result.stderr)
        self.assertLess(float(match.group(1)), 3.0)


class HardeningTests(SynchronousTestCase):
    def test_settings(self) -> None:
        """Type=notify, a dedicated user, CAP_NET_BIND_SERVICE only, exit 78 not restarted, config checked first."""
        unit = settings("mailgw.service")
        expected = {
            "Type": ["notify"], "NotifyAccess": ["main"], "User": ["mailgw"], "Group": ["mailgw"],
            "ProtectSystem": ["strict"], "StateDirectory": ["mailgw"], "NoNewPrivileges": ["yes"],
            "CapabilityBoundingSet": ["CAP_NET_BIND_SERVICE"], "AmbientCapabilities": ["CAP_NET_BIND_SERVICE"],
            "RestartPreventExitStatus": ["78"], "ExecReload": ["/bin/kill -HUP $MAINPID"],
        }
        for key, value in expected.items():
            self.assertEqual(unit.get(key), value, key)
        self.assertIn("mailgwctl check-config", unit["ExecStartPre"][0])
        self.assertIn("--nodaemon --pidfile= mailgw", unit["ExecStart"][0])
        # pyOpenSSL's ffi callbacks need W+X memory; PrivateUsers defeats CAP_NET_BIND_SERVICE.
        self.assertNotIn("MemoryDenyWriteExecute", unit)
        self.assertNotIn("PrivateUsers", unit)

    def test_socket_names(self) -> None:
        """The socket unit names its descriptor, as systemd: endpoints in the config refer to it."""
        sock = settings("mailgw.socket")
        self.assertEqual(sock["FileDescriptorName"], ["imaps"])
        self.assertEqual(sock["Service"], ["mailgw.service"])
