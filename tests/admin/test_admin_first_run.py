"""First run with the real mailgwctl: the first user and the first key, before the files the config names exist."""

from __future__ import annotations

import json
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from mailgw.cli import main as cli
from mailgw.config import load_config
from mailgw.errors import ConfigError
from tests.admin.ctl_helpers import PASSWORD, first_run_config, mailgwctl, workspace


class FirstUserTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = workspace(self)
        self.config = first_run_config(self.root)
        self.users = os.path.join(self.root, "etc", "users")

    def test_first_user_is_added_before_users_file_and_certificate_exist(self) -> None:
        """`mailgwctl --config C user add alice` creates the users file (0600) although nothing the config names exists yet."""
        done = mailgwctl("--config", self.config, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        self.assertEqual(done.code, 0, done.err)
        self.assertEqual(stat.S_IMODE(os.stat(self.users).st_mode), 0o600)
        listed = mailgwctl("--config", self.config, "user", "list", "-f", "json")
        self.assertEqual([u["name"] for u in json.loads(listed.out)], ["alice"], listed.err)

    def test_config_option_after_the_subcommand(self) -> None:
        """`--config` is accepted after `user`, after `user add`, and from $MAILGW_CONFIG alike."""
        done = mailgwctl("user", "add", "--config", self.config, "alice", "--password-stdin", stdin=PASSWORD + "\n")
        self.assertEqual(done.code, 0, done.err)
        done = mailgwctl("user", "--config", self.config, "add", "bob", "--password-stdin", stdin=PASSWORD + "\n")
        self.assertEqual(done.code, 0, done.err)
        listed = mailgwctl("user", "list", "-f", "json", env={"MAILGW_CONFIG": self.config})
        self.assertEqual(sorted(u["name"] for u in json.loads(listed.out)), ["alice", "bob"], listed.err)

    def test_broken_config_is_reported_not_taken_for_no_users_file(self) -> None:
        """A config error stops `user add` with exit 78 naming the key, not "no users file" (exit 2)."""
        with open(self.config, "a") as handle:
            handle.write("\n[imap.secure.typo]\n")
        done = mailgwctl("--config", self.config, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        self.assertEqual(done.code, 78, done.err)
        self.assertIn("imap.secure.typo", done.err)
        self.assertFalse(os.path.exists(self.users))


class FirstKeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = workspace(self)
        self.config = first_run_config(self.root)

    def test_cert_request_before_the_key_exists(self) -> None:
        """`mailgwctl cert request --config C` works when neither the key nor the certificate exists yet."""
        done = mailgwctl("cert", "request", "--config", self.config, "--name", "mail")
        self.assertEqual(done.code, 0, done.err)
        self.assertTrue(os.path.exists(os.path.join(self.root, "etc", "mail.key.pending")))
        self.assertTrue(os.path.exists(os.path.join(self.root, "etc", "mail.csr")))

    def test_cert_commands_read_the_config_with_the_one_parser(self) -> None:
        """A key the schema does not know is refused by `cert request` too (exit 78), as by check-config."""
        with open(self.config, "a") as handle:
            handle.write('\n[tls.mail.extra]\nkey = "x"\n')
        done = mailgwctl("cert", "request", "--config", self.config, "--name", "mail")
        self.assertEqual(done.code, 78, done.out + done.err)
        self.assertIn("tls.mail.extra", done.err)


class LoaderModeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = workspace(self)
        self.config = first_run_config(self.root)

    def test_file_checks_are_skipped_only_on_request(self) -> None:
        """check_files=False loads a config whose files are missing; the default load (start-up) refuses it."""
        with self.assertRaises(ConfigError) as caught:
            load_config(self.config)
        self.assertTrue(any("auth.local.users_file" in p for p in caught.exception.problems))
        config = load_config(self.config, check_files=False)
        self.assertEqual(config.auth.local.users_file, os.path.join(self.root, "etc", "users"))

    def test_other_errors_still_reported_without_file_checks(self) -> None:
        """Skipping file checks keeps every other check: a bad duration is still an error."""
        with open(self.config, "a") as handle:
            handle.write('preauth_timeout = "soon"\n')
        with self.assertRaises(ConfigError) as caught:
            load_config(self.config, check_files=False)
        self.assertEqual(len(caught.exception.problems), 1)
        self.assertIn("imap.secure.preauth_timeout", caught.exception.problems[0])

    def test_parser_accepts_config_after_every_subcommand(self) -> None:
        """Every subcommand of mailgwctl (also queue and cert actions) takes --config after its name."""
        parser, _ = cli.build_parser()
        for argv in (["user", "list", "--config", "C"], ["cert", "show", "--config", "C"],
                     ["queue", "list", "--config", "C"], ["check-config", "--config", "C"]):
            args = parser.parse_args(argv)
            self.assertEqual(args.config_sub, "C", argv)
