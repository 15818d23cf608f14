"""`mailgwctl` and NTLM: check-config warns about local users without an NT hash; `user add` stores one by default where NTLM is offered."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from mailgw.cli import main as cli
from mailgw.auth.usersfile import read_users_file
from tests.admin.helpers_ops import tempdir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NTLM_SERVER = """[auth.ntlm]
domain = "MAILGW"
[imap.legacy]
bind = ["tcp:0:interface=127.0.0.1"]
require_tls = false
auth = ["ntlm"]
"""


class NTLMCLITests(TestCase):
    timeout = 120

    def write(self, offers_ntlm: bool) -> str:
        base = tempdir(self)
        self.users = os.path.join(base, "users")
        os.close(os.open(self.users, os.O_WRONLY | os.O_CREAT, 0o600))
        path = os.path.join(base, "mailgw.toml")
        with open(path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{base}/state"\n[auth]\nbackends = ["local"]\n'
                         f'[auth.local]\nusers_file = "{self.users}"\n' + (NTLM_SERVER if offers_ntlm else ""))
        return path

    def check_config(self, path: str) -> tuple[int, str, str]:
        """`mailgwctl check-config` in this process: (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--config", path, "check-config"])
        return code, out.getvalue(), err.getvalue()

    def ctl(self, path: str, *argv: str, password: str = "") -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=ROOT)
        return subprocess.run([sys.executable, "-m", "mailgw.cli", "--config", path, *argv],
                              input=password + "\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)

    def test_add_stores_nt_hash_where_ntlm_is_offered(self) -> None:
        """With a server offering ntlm, `user add` stores the NT hash and says it is password-equivalent; check-config is quiet."""
        path = self.write(offers_ntlm=True)
        added = self.ctl(path, "user", "add", "alice", "--password-stdin", "--scheme", "bcrypt", password="Pa55word!")
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertIn("NT hash", added.stderr)
        self.assertIn("password-equivalent", added.stderr)
        self.assertIsNotNone(read_users_file(self.users)[0]["alice"].nt_hash)
        code, _, stderr = self.check_config(path)
        self.assertEqual((code, stderr), (0, ""))

    def test_no_ntlm_opt_out_and_warning(self) -> None:
        """`--no-ntlm` stores no NT hash, and check-config then warns (exit still 0) naming the user and the server."""
        path = self.write(offers_ntlm=True)
        added = self.ctl(path, "user", "add", "bob", "--no-ntlm", "--password-stdin", "--scheme", "bcrypt", password="Pa55word!")
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertNotIn("NT hash", added.stderr)
        self.assertIsNone(read_users_file(self.users)[0]["bob"].nt_hash)
        code, stdout, stderr = self.check_config(path)
        self.assertEqual(code, 0, stderr)
        self.assertIn("configuration ok", stdout)
        warning = [line for line in stderr.splitlines() if line.startswith("warning: ")]
        self.assertEqual(len(warning), 1, stderr)
        self.assertIn("imap.legacy offers ntlm", warning[0])
        self.assertIn("bob", warning[0])
        self.assertIn("no NT hash", warning[0])

    def test_no_ntlm_offered(self) -> None:
        """Without any server offering ntlm, `user add` stores no NT hash and check-config does not warn."""
        path = self.write(offers_ntlm=False)
        added = self.ctl(path, "user", "add", "carol", "--password-stdin", "--scheme", "bcrypt", password="Pa55word!")
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertEqual(added.stderr, "")
        self.assertIsNone(read_users_file(self.users)[0]["carol"].nt_hash)
        code, _, stderr = self.check_config(path)
        self.assertEqual((code, stderr), (0, ""))
