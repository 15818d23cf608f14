"""The local users file: format, mode check, argon2id/bcrypt on a thread pool, reload on edit, mailgwctl user."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from argparse import Namespace

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.cli import user as usercli
from mailgw.auth.local import LocalDirectory
from mailgw.auth.md4 import nt_hash
from mailgw.auth.service import AuthService
from mailgw.auth.threads import BlockingRunner
from mailgw.auth.usersfile import (LocalUser, hash_password, parse_users, read_users_file, verify_hash,
                                   write_users_file)
from mailgw.errors import AuthFailed, ConfigError
from mailgw.interfaces import ClientInfo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TLS = ClientInfo("imap", "secure", "192.0.2.7", tls=True)

# Cheap hashes keep the suite fast; verify_hash reads parameters from the hash itself.
_FAST_ARGON = "$argon2id$v=19$m=8,t=1,p=1$"


def fast_argon2(password: str) -> str:
    import argon2
    return argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)


class FormatTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """A written file parses back to the same accounts, including NT hash and addresses."""
        path = os.path.abspath(self.mktemp())
        users = {"alice": LocalUser("alice", fast_argon2("S3cret!"), ("alice@example.test",), nt_hash("S3cret!")),
                 "bob": LocalUser("bob", fast_argon2("hunter2"))}
        write_users_file(path, users)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(read_users_file(path)[0], users)

    def test_bad_lines_named(self) -> None:
        """Malformed lines raise ConfigError naming the line."""
        text = ("alice:$argon2id$x:a@example.test\nbad name:$2b$x\ncarol:md5hash\ndave:$2b$x:not-an-address\n"
                "erin:$2b$x::XYZ\nfred:$2b$x:A@example.test\n")
        e = self.assertRaises(ConfigError, parse_users, text, "users")
        self.assertEqual([p.split(":")[1] for p in e.problems], ["2", "3", "4", "5", "6"])

    def test_mode_refused(self) -> None:
        """A users file others may access is refused; group-readable (0640, the service's group) is accepted."""
        path = os.path.abspath(self.mktemp())
        write_users_file(path, {})
        os.chmod(path, 0o640)
        self.assertEqual(read_users_file(path)[0], {})
        for mode in (0o604, 0o644, 0o602):
            os.chmod(path, mode)
            self.assertRaises(ConfigError, read_users_file, path)

    def test_hash_schemes(self) -> None:
        """argon2id and bcrypt hashes verify; wrong passwords and garbage hashes do not."""
        for scheme in ("argon2id", "bcrypt"):
            stored = hash_password("pä55", scheme)
            self.assertTrue(verify_hash(stored, "pä55"))
            self.assertFalse(verify_hash(stored, "pass"))
        self.assertTrue(hash_password("x").startswith("$argon2id$"))
        self.assertFalse(verify_hash("$argon2id$garbage", "x"))
        self.assertFalse(verify_hash("$2b$garbage", "x"))
        self.assertRaises(ValueError, hash_password, "x" * 73, "bcrypt")


class LocalDirectoryTests(TestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        write_users_file(self.path, {
            "alice": LocalUser("alice", fast_argon2("S3cret!"), ("alice@example.test",), nt_hash("S3cret!")),
            "bob": LocalUser("bob", hash_password("hunter2", "bcrypt"), ("bob@example.test",)),
            "dis": LocalUser("dis", "!" + fast_argon2("pw")),
        })
        self.runner = BlockingRunner(reactor, "test-local", maxthreads=2)
        self.addCleanup(self.runner.close)
        self.directory = LocalDirectory(self.path, self.runner, recheck_interval=0)
        self.service = AuthService([self.directory], reactor, failure_delay=0)

    @inlineCallbacks
    def test_passwords(self):  # type: ignore[no-untyped-def]
        """argon2id and bcrypt accounts log in by name or address; wrong, unknown and disabled fail."""
        self.assertEqual((yield self.service.login("alice@example.test", "S3cret!", TLS)).user, "alice")
        self.assertEqual((yield self.service.login("BOB", "hunter2", TLS)).user, "bob")
        for user, pw, reason in (("alice", "nope", "bad_password"), ("zed", "S3cret!", "unknown_user"),
                                 ("dis", "pw", "disabled")):
            try:
                yield self.service.login(user, pw, TLS)
            except AuthFailed as e:
                self.assertEqual(e.reason, reason)
            else:
                self.fail(f"{user} logged in")

    @inlineCallbacks
    def test_hashing_off_reactor(self):  # type: ignore[no-untyped-def]
        """Password checks run in the pool's threads, not the reactor thread."""
        import threading
        seen = []
        original = self.directory._check

        def spy(login: str, password: str):  # type: ignore[no-untyped-def]
            seen.append(threading.current_thread().name)
            return original(login, password)

        self.directory._check = spy  # type: ignore[method-assign]
        yield self.directory.check_password("alice", "S3cret!")
        self.assertNotEqual(seen[0], threading.main_thread().name)

    @inlineCallbacks
    def test_reload_on_edit(self):  # type: ignore[no-untyped-def]
        """An edit to the file is picked up without a restart; a broken edit keeps the old contents."""
        users = read_users_file(self.path)[0]
        users["carol"] = LocalUser("carol", fast_argon2("pw"), ("carol@example.test",))
        write_users_file(self.path, users)
        self.assertEqual((yield self.directory.lookup("carol@example.test")).user, "carol")
        with open(self.path, "a") as f:
            f.write("broken line\n")
        self.assertEqual((yield self.directory.lookup("carol")).user, "carol")
        os.chmod(self.path, 0o644)  # a later chmod mistake is not a reason to lose the accounts
        self.assertEqual((yield self.directory.lookup("alice")).user, "alice")

    @inlineCallbacks
    def test_nt_hash(self):  # type: ignore[no-untyped-def]
        """The NT hash is served for NTLM; none for accounts without one or disabled ones."""
        identity, value = yield self.directory.nt_hash("alice")
        self.assertEqual((identity.user, value), ("alice", nt_hash("S3cret!")))
        self.assertIsNone((yield self.directory.nt_hash("bob")))
        self.assertIsNone((yield self.directory.nt_hash("dis")))

    def test_interface(self) -> None:
        """LocalDirectory provides IDirectory."""
        from zope.interface.verify import verifyObject
        from mailgw.interfaces import IDirectory
        verifyObject(IDirectory, self.directory)

    def test_refused_at_start(self) -> None:
        """A world-readable or missing file is a ConfigError at construction."""
        os.chmod(self.path, 0o644)
        self.assertRaises(ConfigError, LocalDirectory, self.path, self.runner)
        self.assertRaises(ConfigError, LocalDirectory, self.path + ".missing", self.runner)


class UserCLITests(SynchronousTestCase):
    def cli(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        import argparse
        parser = argparse.ArgumentParser(prog="mailgwctl")
        usercli.add_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["user", "--users-file", self.path, *argv])
        out, err = io.StringIO(), io.StringIO()
        return usercli.run(args, io.StringIO(stdin), out, err), out.getvalue(), err.getvalue()

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())

    def test_add_passwd_del_list(self) -> None:
        """add, passwd, list and del edit the file; the password comes from stdin."""
        self.assertEqual(self.cli("add", "alice", "-a", "Alice@Example.test", "--ntlm", "--password-stdin",
                                  stdin="S3cret!\n")[0], 0)
        users = read_users_file(self.path)[0]
        self.assertTrue(verify_hash(users["alice"].password_hash, "S3cret!"))
        self.assertEqual(users["alice"].nt_hash, nt_hash("S3cret!"))
        self.assertEqual(users["alice"].addresses, ("alice@example.test",))
        self.assertEqual(self.cli("passwd", "alice", "--password-stdin", stdin="n3w\n")[0], 0)
        users = read_users_file(self.path)[0]
        self.assertTrue(verify_hash(users["alice"].password_hash, "n3w"))
        self.assertEqual(users["alice"].nt_hash, nt_hash("n3w"))  # NT hash follows the new password
        code, out, _ = self.cli("list", "-f", "json")
        self.assertEqual(json.loads(out)[0]["name"], "alice")
        self.assertEqual(self.cli("del", "alice")[0], 2)  # no --yes
        self.assertEqual(self.cli("del", "alice", "--yes")[0], 0)
        self.assertEqual(read_users_file(self.path)[0], {})

    def test_errors(self) -> None:
        """Duplicates, unknown users, bad names and empty passwords fail with a message."""
        self.cli("add", "bob", "--password-stdin", stdin="pw\n")
        self.assertEqual(self.cli("add", "BOB", "--password-stdin", stdin="pw\n")[0], 1)
        self.assertEqual(self.cli("passwd", "nobody", "--password-stdin", stdin="pw\n")[0], 1)
        self.assertEqual(self.cli("add", "bad:name", "--password-stdin", stdin="pw\n")[0], 2)
        self.assertEqual(self.cli("add", "carol", "--password-stdin", stdin="\n")[0], 1)
        self.assertEqual(self.cli("add", "carol")[0], 1)  # no terminal to prompt on

    def test_nt_hash_default_follows_config(self) -> None:
        """add stores the NT hash by default when the caller says the config offers NTLM (with a note); --no-ntlm opts out."""
        import argparse
        parser = argparse.ArgumentParser(prog="mailgwctl")
        usercli.add_parser(parser.add_subparsers(dest="command", required=True))

        def add(*argv: str, offers: bool) -> str:
            args = parser.parse_args(["user", "--users-file", self.path, "add", *argv, "--password-stdin", "--scheme", "bcrypt"])
            args.config_offers_ntlm = offers
            err = io.StringIO()
            self.assertEqual(usercli.run(args, io.StringIO("pw\n"), io.StringIO(), err), 0)
            return err.getvalue()

        self.assertIn("password-equivalent", add("dora", offers=True))
        self.assertEqual(add("erin", "--no-ntlm", offers=True), "")
        self.assertEqual(add("finn", offers=False), "")
        users = read_users_file(self.path)[0]
        self.assertEqual(users["dora"].nt_hash, nt_hash("pw"))
        self.assertIsNone(users["erin"].nt_hash)
        self.assertIsNone(users["finn"].nt_hash)

    def test_no_password_option(self) -> None:
        """There is no option that takes the password on the command line."""
        self.assertRaises(SystemExit, self.cli, "add", "x", "--password", "pw")

    def test_subprocess(self) -> None:
        """The standalone entry point works as a process with --password-stdin."""
        env = dict(os.environ, PYTHONPATH=ROOT)
        proc = subprocess.run([sys.executable, "-m", "mailgw.cli.user", "user", "--users-file", self.path,
                               "add", "dave", "--password-stdin", "--scheme", "bcrypt"],
                              input="pw\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(read_users_file(self.path)[0]["dave"].password_hash.startswith("$2b$"))

    def test_namespace_without_file(self) -> None:
        """run() without a users file is a usage error."""
        err = io.StringIO()
        self.assertEqual(usercli.run(Namespace(users_file=None, user_command="list"), err=err), 2)
