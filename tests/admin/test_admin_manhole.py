"""The SSH manhole with OpenSSH's client: the authorized key gets a Python prompt; passwords and other keys are refused."""

from __future__ import annotations

import os
import re
import stat
import subprocess

from twisted.internet import defer, error, protocol, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.admin.manhole import HOST_KEY_NAME
from mailgw.config import load_config_text
from mailgw.errors import ConfigError
from tests.admin.helpers_ops import tempdir, FakeSession, port_of, start_gateway, write_config


def keygen(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path], check=True, timeout=30)
    return path


def fingerprint(public_key_file: str) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", public_key_file], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


class SSHClient(protocol.ProcessProtocol):
    """Drives an ssh client like `expect`: (text to wait for, bytes to send) steps; `done` fires with (exit code, output)."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = list(script)
        self.output = b""
        self._seen = 0
        self.done: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        while self.script:
            wanted, reply = self.script[0]
            found = self.output.find(wanted, self._seen)
            if found < 0:
                return
            self._seen = found + len(wanted)
            self.script.pop(0)
            self.transport.write(reply)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        code = reason.value.exitCode if isinstance(reason.value, (error.ProcessDone, error.ProcessTerminated)) else None
        self.done.callback((code, self.output.decode("utf-8", "replace")))


class ManholeTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.keys = tempdir(self)
        self.admin_key = keygen(self.keys, "admin")
        self.other_key = keygen(self.keys, "intruder")
        self.authorized = os.path.join(self.keys, "authorized_keys")
        with open(self.authorized, "w") as handle:
            handle.write("# the operators\n\n" + open(self.admin_key + ".pub").read())
        os.chmod(self.authorized, 0o600)
        path, self.state = write_config(self, '[admin]\nmanhole = { listen = "tcp:0:interface=127.0.0.1", '
                                              f'authorized_keys_file = "{self.authorized}" }}\n')
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.gateway = start_gateway(self, path)
        self.port = port_of(self.gateway, "admin.manhole.listen")

    def ssh(self, *options: str, script: tuple[tuple[bytes, bytes], ...] = (), identity: str = "", tty: bool = True,
            command: tuple[str, ...] = ()) -> defer.Deferred:
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.keys}/known_hosts", "-o", "StrictHostKeyChecking=accept-new",
                "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"]
        argv += ["-i", identity] if identity else ["-o", "IdentityFile=none"]
        argv += (["-tt"] if tty else []) + list(options) + ["admin@127.0.0.1", *command]
        client = SSHClient(list(script))
        reactor.spawnProcess(client, "/usr/bin/ssh", argv, env={"PATH": "/usr/bin:/bin", "HOME": self.keys})
        return client.done

    @defer.inlineCallbacks
    def test_authorized_key_gets_prompt(self):
        """The authorized key gets a Python prompt that lists sessions per listener; the login is logged with its fingerprint."""
        for peer, user in (("127.0.0.5:40001", "alice"), ("127.0.0.6:40002", None)):
            self.gateway.sessions.add("secure", "imap", FakeSession(self.gateway.sessions, peer, user))
        code, output = yield self.ssh(identity=self.admin_key, script=((b">>> ", b"sessions()\r"), (b"session(s)", b"\x04")))
        self.assertIn("127.0.0.5:40001", output)
        self.assertIn("2 session(s)", output)
        self.assertIn("secure", output)
        self.assertIn(">>> ", output)
        logins = [e for e in self.events if e.get("event") == "manhole_login"]
        self.assertEqual(len(logins), 1)
        self.assertEqual(logins[0]["key"], fingerprint(self.admin_key + ".pub"))
        self.assertIn(f'key={fingerprint(self.admin_key + ".pub")}', logins[0]["mailgw_line"])
        self.assertEqual([e for e in self.events if e.get("event") == "manhole.key_refused"], [])

    @defer.inlineCallbacks
    def test_kick(self):
        """kick(n) closes session n of the last listing."""
        victim = FakeSession(self.gateway.sessions, "127.0.0.7:40003", "bob")
        self.gateway.sessions.add("secure", "imap", victim)
        code, output = yield self.ssh(identity=self.admin_key, script=((b">>> ", b"sessions()\r"), (b"session(s)", b"kick(0)\r"),
                                                                            (b"kicked", b"\x04")))
        self.assertTrue(victim.kicked, output)
        self.assertIn("kicked 127.0.0.7:40003 (bob)", output)
        self.assertEqual(self.gateway.sessions.sessions(), [])

    @defer.inlineCallbacks
    def test_reload_and_listeners(self):
        """reload() in the shell runs a configuration reload and shows its result; listeners() shows bound addresses."""
        code, output = yield self.ssh(identity=self.admin_key, script=(
            (b">>> ", b"listeners()\r"), (b"admin.manhole.listen", b"reload()\r"), (b"Deferred", b"\x04")))
        self.assertRegex(output, rf"admin.manhole.listen +127.0.0.1:{self.port} +tcp:0:interface=127.0.0.1")
        self.assertRegex(output, r"(current result: 'ok'|called back: 'ok')")
        self.assertIn("config_reload", [e.get("event") for e in self.events])

    @defer.inlineCallbacks
    def test_password_refused(self):
        """A password attempt is refused: the server offers publickey only, so no password is ever asked for."""
        code, output = yield self.ssh("-o", "PreferredAuthentications=password,keyboard-interactive",
                                      "-o", "PubkeyAuthentication=no", tty=False)
        self.assertEqual(code, 255)
        self.assertIn("Permission denied (publickey)", output)
        self.assertNotIn(">>>", output)

    @defer.inlineCallbacks
    def test_unknown_key_refused(self):
        """A key not in authorized_keys is refused, logged with its fingerprint, and never logged as a login."""
        code, output = yield self.ssh(identity=self.other_key, tty=False)
        self.assertEqual(code, 255)
        self.assertIn("Permission denied (publickey)", output)
        self.assertEqual([e for e in self.events if e.get("event") == "manhole_login"], [])
        refused = [e["key"] for e in self.events if e.get("event") == "manhole.key_refused"]
        self.assertIn(fingerprint(self.other_key + ".pub"), refused)

    @defer.inlineCallbacks
    def test_exec_refused(self):
        """A command (`ssh host CMD`) is refused even with the authorized key: only the interactive shell exists."""
        code, output = yield self.ssh(identity=self.admin_key, tty=False, command=("id",))
        self.assertNotEqual(code, 0, output)
        self.assertNotIn("uid=", output)

    @defer.inlineCallbacks
    def test_idle_timeout(self):
        """A logged-in shell with no traffic is closed after the idle timeout."""
        from mailgw.admin.manhole import AuthorizedKeysFile, ensure_host_key, manhole_factory
        factory = manhole_factory({}, ensure_host_key(os.path.join(self.state, HOST_KEY_NAME)),
                                  AuthorizedKeysFile(self.authorized), idle_timeout=1.0)
        svc = self.gateway.listen("tcp:0:interface=127.0.0.1", factory, label="test.manhole")
        self.port = svc.port.getHost().port
        started = reactor.seconds()
        code, output = yield self.ssh(identity=self.admin_key, script=((b">>> ", b"1 + 1\r"),))
        self.assertIn("2", output)
        self.assertIn("closed", output)
        self.assertLess(reactor.seconds() - started, 20)

    def test_host_key(self) -> None:
        """The host key is ed25519, in state_dir, mode 0600, and the same key is served after a restart."""
        path = os.path.join(self.state, HOST_KEY_NAME)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertIn(b"OPENSSH PRIVATE KEY", open(path, "rb").read())
        from twisted.conch.ssh import keys
        self.assertEqual(keys.Key.fromFile(path).type(), "Ed25519")


class ManholeConfigTests(SynchronousTestCase):
    def config(self, listen: str) -> str:
        keys = os.path.join(tempdir(self), "authorized_keys")
        open(keys, "w").close()
        return f'config_version = 1\n[admin]\nmanhole = {{ listen = "{listen}", authorized_keys_file = "{keys}" }}\n'

    def test_off_loopback_refused(self) -> None:
        """A manhole on a non-loopback address, or on all addresses, is refused at load with the key named."""
        for listen in ("tcp:2222:interface=0.0.0.0", "tcp:2222", "tcp6:2222:interface=\\\\:\\\\:", "tcp:2222:interface=192.0.2.1",
                       "systemd:domain=INET:name=manhole"):
            with self.assertRaises(ConfigError, msg=listen) as caught:
                load_config_text(self.config(listen))
            self.assertEqual(len(caught.exception.problems), 1, caught.exception.problems)
            self.assertTrue(caught.exception.problems[0].startswith("admin.manhole.listen: "), caught.exception.problems)
            self.assertIn("not a loopback address", caught.exception.problems[0])

    def test_loopback_accepted(self) -> None:
        """127.0.0.1, other 127/8 addresses and ::1 are accepted."""
        for listen in ("tcp:2222:interface=127.0.0.1", "tcp:2222:interface=127.0.0.2", "tcp6:2222:interface=\\\\:\\\\:1"):
            self.assertIsNotNone(load_config_text(self.config(listen)).admin.manhole)
