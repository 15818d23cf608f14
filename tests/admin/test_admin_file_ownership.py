"""Files mailgwctl (as root) writes stay readable by the service: owner, group and mode kept or taken from the directory."""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mailgw import files
from mailgw.errors import ConfigError
from tests.admin.ctl_helpers import PASSWORD, first_run_config, mailgwctl, workspace

SERVICE_UID, SERVICE_GID = 64123, 64124  # no such account needs to exist: ownership is numbers


def owner(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


class RootOwnershipTests(SynchronousTestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("giving files to another owner needs root")
        self.root = workspace(self)
        self.etc = os.path.join(self.root, "etc")
        os.makedirs(self.etc)
        os.chown(self.etc, 0, SERVICE_GID)  # the documented /etc/mailgw: root:mailgw 0750
        os.chmod(self.etc, 0o750)
        self.config = first_run_config(self.root)
        self.users = os.path.join(self.etc, "users")

    def add(self, name: str, command: str = "add") -> None:
        done = mailgwctl("--config", self.config, "user", command, name, "--password-stdin", stdin=PASSWORD + "\n")
        self.assertEqual(done.code, 0, done.err)

    def test_new_users_file_takes_the_directory_group(self) -> None:
        """The first `user add` creates root:<directory's group> 0640, readable by the service's group."""
        self.add("alice")
        self.assertEqual(owner(self.users), (0, SERVICE_GID, 0o640))

    def test_rewrites_keep_owner_group_and_mode(self) -> None:
        """`user add`, `user passwd` and `user del` keep the users file's owner, group and mode."""
        self.add("alice")
        os.chown(self.users, SERVICE_UID, SERVICE_GID)
        os.chmod(self.users, 0o600)
        self.add("bob")
        self.add("alice", "passwd")
        self.assertEqual(owner(self.users), (SERVICE_UID, SERVICE_GID, 0o600))
        done = mailgwctl("--config", self.config, "user", "del", "bob", "--yes")
        self.assertEqual(done.code, 0, done.err)
        self.assertEqual(owner(self.users), (SERVICE_UID, SERVICE_GID, 0o600))

    def test_keys_and_certificates_keep_and_take_ownership(self) -> None:
        """cert self-sign creates key root:group 0640 and certificate 0644; --force and cert install keep what is there."""
        key, cert = os.path.join(self.etc, "mail.key"), os.path.join(self.etc, "mail.pem")
        done = mailgwctl("--config", self.config, "cert", "self-sign", "--name", "mail")
        self.assertEqual(done.code, 0, done.err)
        self.assertEqual(owner(key), (0, SERVICE_GID, 0o640))
        self.assertEqual(owner(cert), (0, SERVICE_GID, 0o644))
        os.chown(key, SERVICE_UID, SERVICE_GID)
        os.chmod(key, 0o440)
        done = mailgwctl("--config", self.config, "cert", "self-sign", "--name", "mail", "--force")
        self.assertEqual(done.code, 0, done.err)
        self.assertEqual(owner(key), (SERVICE_UID, SERVICE_GID, 0o440))
        for step in (("ca", "init", "--permit", "localhost"), ("cert", "request", "--name", "mail"),
                     ("ca", "issue", "--csr", os.path.join(self.etc, "mail.csr"), "--out", os.path.join(self.root, "issued.pem")),
                     ("cert", "install", "--name", "mail", "--no-system-ca", os.path.join(self.root, "issued.pem"))):
            done = mailgwctl("--config", self.config, *step)
            self.assertEqual(done.code, 0, f"{step}: {done.out}{done.err}")
        self.assertEqual(owner(key), (SERVICE_UID, SERVICE_GID, 0o440))
        self.assertEqual(owner(cert), (0, SERVICE_GID, 0o644))

    def test_missing_certificate_directory_takes_its_parents_ownership(self) -> None:
        """`cert self-sign` into /etc/mailgw/tls creates tls/ root:group 0750, so the service reaches the key in it."""
        with open(self.config) as handle:
            text = handle.read().replace(f"{self.etc}/mail.", f"{self.etc}/tls/mail.")
        with open(self.config, "w") as handle:
            handle.write(text)
        done = mailgwctl("--config", self.config, "cert", "self-sign", "--name", "mail")
        self.assertEqual(done.code, 0, done.err)
        self.assertEqual(owner(os.path.join(self.etc, "tls")), (0, SERVICE_GID, 0o750))
        self.assertEqual(owner(os.path.join(self.etc, "tls", "mail.key")), (0, SERVICE_GID, 0o640))

    def test_world_bits_never_survive_a_rewrite_of_a_secret(self) -> None:
        """A secret someone made 0644 is rewritten 0640 (same owner): it never keeps access for others."""
        path = os.path.join(self.etc, "secret")
        files.replace(path, b"old", secret=True)
        os.chown(path, SERVICE_UID, SERVICE_GID)
        os.chmod(path, 0o644)
        files.replace(path, b"new", secret=True)
        self.assertEqual(owner(path), (SERVICE_UID, SERVICE_GID, 0o640))


class SharedCheckTests(SynchronousTestCase):
    """check-config refuses exactly what the server's start-up refuses (issue 12, defect 9)."""

    def setUp(self) -> None:
        self.root = workspace(self)
        self.config = first_run_config(self.root)
        self.users = os.path.join(self.root, "etc", "users")
        for step in (("user", "add", "alice", "--password-stdin"), ("cert", "self-sign", "--name", "mail")):
            done = mailgwctl("--config", self.config, *step, stdin=PASSWORD + "\n")
            self.assertEqual(done.code, 0, done.err)

    def check(self) -> tuple[int, str]:
        done = mailgwctl("check-config", "--config", self.config)
        return done.code, done.out + done.err

    def test_group_readable_secrets_pass(self) -> None:
        """A 0640 users file and key pass check-config."""
        os.chmod(self.users, 0o640)
        os.chmod(os.path.join(self.root, "etc", "mail.key"), 0o640)
        self.assertEqual(self.check()[0], 0, self.check()[1])

    def test_world_readable_users_file_refused_by_check_config_and_start_up(self) -> None:
        """check-config exits 78 for a world-readable users file, with the line start-up raises."""
        from mailgw.auth.local import read_checked

        os.chmod(self.users, 0o644)
        code, output = self.check()
        self.assertEqual(code, 78, output)
        with self.assertRaises(ConfigError) as caught:
            read_checked(self.users)
        self.assertIn(caught.exception.problems[0], output)

    def test_world_readable_key_refused_by_check_config(self) -> None:
        """check-config exits 78 for a world-readable private key, naming tls.mail.key_file."""
        os.chmod(os.path.join(self.root, "etc", "mail.key"), 0o604)
        code, output = self.check()
        self.assertEqual(code, 78, output)
        self.assertIn("tls.mail.key_file:", output)
        self.assertIn("accessible by others", output)


class SecretCheckUnitTests(SynchronousTestCase):
    def test_modes(self) -> None:
        """Owner and group access pass; any access for others is a problem."""
        path = os.path.join(workspace(self), "secret")
        files.replace(path, b"x", secret=True)
        for mode, refused in ((0o600, False), (0o640, False), (0o660, False), (0o604, True), (0o601, True), (0o644, True)):
            os.chmod(path, mode)
            self.assertEqual(files.secret_problem(path) is not None, refused, oct(mode))

    def test_new_secret_in_private_directory_is_0600(self) -> None:
        """A secret created in a directory of its owner's own group gets 0600."""
        path = os.path.join(workspace(self), "secret")
        files.replace(path, b"x", secret=True)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
