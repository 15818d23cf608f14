"""`twistd mailgw` and `mailgwctl` start-up: plugin listed, config errors exit 78 before binding."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.support.gateway import PRIVATE_NETWORK, REPO, Gateway, environment, twistd_command

BAD = """config_version = 1
[imap.secure]
bind = ["tcp:{port}:interface=127.0.0.1"]
requre_tls = true
"""


def mailgwctl(*args: str, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailgw.cli", *args], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=60)


class TapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def test_plugin_listed(self) -> None:
        """`twistd --help` lists the mailgw plugin."""
        result = subprocess.run(twistd_command("--help")[:3] + ["--help"], capture_output=True, text=True,
                                env=environment(), cwd=self.dir, timeout=60)
        self.assertIn("mailgw", result.stdout)

    def test_config_error_exits_78_before_binding(self) -> None:
        """A bad config makes twistd exit 78 with one line naming the key, and nothing is bound."""
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        path = os.path.join(self.dir, "bad.toml")
        with open(path, "w") as handle:
            handle.write(BAD.format(port=port))
        result = subprocess.run(twistd_command("mailgw", "--config", path), capture_output=True, text=True,
                                env=environment(), cwd=self.dir, timeout=60)
        self.assertEqual(result.returncode, 78, result.stdout + result.stderr)
        self.assertIn("config error: imap.secure.requre_tls: unknown key", result.stderr)
        lines = [l for l in result.stderr.splitlines() if l.startswith("config error:")]
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertNotIn("listening on", result.stdout)

    def test_check_config(self) -> None:
        """mailgwctl check-config exits 78 with one line per problem, 0 on a good file."""
        path = os.path.join(self.dir, "bad.toml")
        with open(path, "w") as handle:
            handle.write(BAD.format(port=143))
        result = mailgwctl("check-config", "--config", path, cwd=self.dir)
        self.assertEqual(result.returncode, 78)
        self.assertIn("config error: imap.secure.requre_tls: unknown key", result.stderr)
        good = os.path.join(self.dir, "good.toml")
        with open(good, "w") as handle:
            handle.write('config_version = 1\n[log]\nformat = "json"\n')
        result = mailgwctl("check-config", "--config", good, cwd=self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        shown = mailgwctl("--config", good, "show-config", "--non-default", cwd=self.dir)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn('format = "json"', shown.stdout)
        self.assertNotIn("hostname", shown.stdout)

    def test_development_default_state(self) -> None:
        """Without --config the gateway makes ./mailgw-state with a 0600 key and a localhost certificate."""
        gateway = Gateway(None, self.dir, prefix=PRIVATE_NETWORK)  # its fixed ports need not be free here
        gateway.start(expect=6, timeout=30)
        try:
            gateway.wait_for("starting up")
            gateway.wait_for("configuration: the development default")
            key = os.path.join(self.dir, "mailgw-state", "tls", "localhost.key")
            deadline_output = "".join(gateway.output)
            self.assertTrue(os.path.exists(key), deadline_output)
            self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
            users = os.path.join(self.dir, "mailgw-state", "users")
            self.assertEqual(stat.S_IMODE(os.stat(users).st_mode), 0o600)
            self.assertEqual(sum("created the first user" in line for line in gateway.output), 1)
        finally:
            gateway.stop()
        again = Gateway(None, self.dir, prefix=PRIVATE_NETWORK).start(expect=6, timeout=30)
        try:
            again.wait_for("starting up")
            self.assertFalse(any("first user" in line for line in again.output))
        finally:
            again.stop()
        listed = mailgwctl("user", "list", "-f", "json", cwd=self.dir)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn('"name": "mailgw"', listed.stdout)


class ConfigDiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def test_twistd_honours_mailgw_config(self) -> None:
        """`twistd mailgw` without --config runs the file $MAILGW_CONFIG names, and logs that it did."""
        path = os.path.join(self.dir, "from-env.toml")
        with open(path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{self.dir}/state"\n[auth]\nbackends = []\n'
                         '[admin]\nhttp = { listen = "tcp:0:interface=127.0.0.1" }\n')
        gateway = Gateway(None, self.dir, env={"MAILGW_CONFIG": path}).start(expect=1, timeout=30)
        try:
            self.assertIn("admin.http.listen", gateway.ports)
            gateway.wait_for(f"configuration: {path} (from $MAILGW_CONFIG)")
            self.assertFalse(os.path.exists(os.path.join(self.dir, "mailgw-state")))  # not the development default
            self.assertTrue(os.path.isdir(os.path.join(self.dir, "state")))
        finally:
            gateway.stop()
        # mailgwctl, given the same environment, reads the same file.
        shown = subprocess.run([sys.executable, "-m", "mailgw.cli", "show-config", "--non-default"],
                               cwd=self.dir, env=environment({"MAILGW_CONFIG": path}), capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn(f'state_dir = "{self.dir}/state"', shown.stdout)

    def test_missing_mailgw_config_exits_78(self) -> None:
        """$MAILGW_CONFIG naming a missing file is a configuration error (78), not a silent development default."""
        result = subprocess.run(twistd_command("mailgw"), capture_output=True, text=True, cwd=self.dir, timeout=60,
                                env=environment({"MAILGW_CONFIG": os.path.join(self.dir, "missing.toml")}))
        self.assertEqual(result.returncode, 78, result.stdout + result.stderr)
        self.assertIn("missing.toml", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "mailgw-state")))

    def test_locate_order(self) -> None:
        """--config wins, then $MAILGW_CONFIG, then /etc/mailgw/mailgw.toml when it exists, else the development default."""
        from mailgw.config.locate import locate_config

        present = lambda path: True  # noqa: E731
        absent = lambda path: False  # noqa: E731
        env = {"MAILGW_CONFIG": "/srv/env.toml"}
        self.assertEqual(locate_config("/srv/cli.toml", env, exists=present), ("/srv/cli.toml", "--config"))
        self.assertEqual(locate_config(None, env, exists=absent), ("/srv/env.toml", "$MAILGW_CONFIG"))
        self.assertEqual(locate_config(None, {}, exists=present), ("/etc/mailgw/mailgw.toml", "system default"))
        self.assertEqual(locate_config(None, {"MAILGW_CONFIG": ""}, exists=absent), (None, "development default"))


class PackagingTests(SynchronousTestCase):
    def test_no_init_in_plugin_dirs(self) -> None:
        """twisted/ and twisted/plugins/ are not packages (an __init__.py would hide or shadow Twisted)."""
        self.assertFalse(os.path.exists(os.path.join(REPO, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(REPO, "twisted", "plugins", "__init__.py")))
        self.assertTrue(os.path.exists(os.path.join(REPO, "twisted", "plugins", "mailgw_plugin.py")))
