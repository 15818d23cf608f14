"""The SSH manhole with OpenSSH's client: the authorized key gets a Python prompt; passwords and other keys are refused."""

from __future__ import annotations

import os
import re
import stat
import subprocess

from twisted.internet import defer, error, protocol, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.admin.manhole import HOST_KEY_NAME, AuthorizedKeysFile
from mailgw.config import load_config_text
from mailgw.errors import ConfigError
from tests.admin.helpers_ops import tempdir, FakeSession, port_of, start_gateway, until, write_config


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
            command: tuple[str, ...] = (), client: "SSHClient | None" = None) -> defer.Deferred:
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.keys}/known_hosts", "-o", "StrictHostKeyChecking=accept-new",
                "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"]
        argv += ["-i", identity] if identity else ["-o", "IdentityFile=none"]
        argv += (["-tt"] if tty else []) + list(options) + ["admin@127.0.0.1", *command]
        client = client or SSHClient(list(script))
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
            (b">>> ", b"listeners()\r"), (b"admin.manhole.listen", b"reload()\r"), (b"reload: ", b"health()\r"),
            (b'"status"', b"\x04")))
        self.assertRegex(output, rf"admin.manhole.listen +127.0.0.1:{self.port} +tcp:0:interface=127.0.0.1")
        self.assertIn("reload: ok", output)
        self.assertNotIn("Deferred", output)
        self.assertRegex(output, r'"status": "ok"')
        self.assertIn("config_reload", [e.get("event") for e in self.events])
        # Ctrl-D is an ordinary logout: OpenSSH's "disconnected by user" is an info line, not an error.
        yield until(lambda: any(e.get("event") == "manhole.disconnect" for e in self.events))
        self.assertEqual(self.failures(), [])
        self.assertEqual([e["log_level"].name for e in self.events if e.get("event") == "manhole.disconnect"], ["info"])

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

    def failures(self) -> list[dict]:
        """Logged tracebacks and error/critical events (an ordinary close must log none)."""
        return [e for e in self.events if e.get("log_failure") is not None or e.get("isError")
                or getattr(e.get("log_level"), "name", "") in ("error", "critical")]

    @defer.inlineCallbacks
    def test_weak_algorithms_refused(self):
        """OpenSSH asking only for 3des-cbc, aes128-cbc, hmac-md5, hmac-sha1 or SHA-1 DH finds no match; its defaults log in."""
        for option, name, kind in (("-c", "3des-cbc", "cipher"), ("-c", "aes128-cbc", "cipher"), ("-m", "hmac-md5", "MAC"),
                                   ("-m", "hmac-sha1", "MAC"), ("-oKexAlgorithms=diffie-hellman-group14-sha1", "", "key exchange method"),
                                   ("-oKexAlgorithms=diffie-hellman-group-exchange-sha256", "", "key exchange method")):
            code, output = yield self.ssh(*([option, name] if name else [option]), identity=self.admin_key, tty=False)
            self.assertEqual(code, 255, output)
            self.assertIn(f"no matching {kind} found", output)
        code, output = yield self.ssh("-v", identity=self.admin_key, script=((b">>> ", b"\x04"),))
        self.assertIn(">>> ", output)
        self.assertRegex(output, r"kex: algorithm: (curve25519-sha256|mlkem768x25519-sha256)")
        self.assertRegex(output, r"kex: server->client cipher: aes(128|192|256)-ctr MAC: hmac-sha2-(256|384|512) ")

    @defer.inlineCallbacks
    def test_closing_input_ends_shell_without_traceback(self):
        """The client closing its input at the prompt (CHANNEL_EOF) ends the session; nothing is logged as an error."""
        closing = SSHClient([])
        closed = []

        def out(data: bytes) -> None:
            SSHClient.outReceived(closing, data)
            if b">>> " in closing.output and not closed:
                closed.append(True)
                closing.transport.closeStdin()

        closing.outReceived = closing.errReceived = out  # type: ignore[method-assign]
        self.ssh(identity=self.admin_key, client=closing)
        code, output = yield closing.done
        self.assertIn("Connection to 127.0.0.1 closed", output)
        self.assertEqual(self.failures(), [])

    @defer.inlineCallbacks
    def test_shell_without_terminal_refused_without_traceback(self):
        """A shell request without a pty (`ssh host < file`) is refused with one warning, not a traceback."""
        code, output = yield self.ssh(identity=self.admin_key, tty=False)
        self.assertEqual(code, 255, output)
        self.assertIn("shell request failed", output)
        self.assertEqual(self.failures(), [])
        self.assertIn("manhole.no_terminal", [e.get("event") for e in self.events])

    def test_host_key(self) -> None:
        """The host key is ed25519, in state_dir, mode 0600, and the same key is served after a restart."""
        path = os.path.join(self.state, HOST_KEY_NAME)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertIn(b"OPENSSH PRIVATE KEY", open(path, "rb").read())
        from twisted.conch.ssh import keys
        self.assertEqual(keys.Key.fromFile(path).type(), "Ed25519")


class ManholeUnitTests(SynchronousTestCase):
    def test_transport_algorithms(self) -> None:
        """Each transport the factory builds offers only CTR/AEAD ciphers, SHA-2 MACs and curve25519/ECDH; Conch's class lists are untouched."""
        from twisted.conch.ssh.transport import SSHServerTransport
        from twisted.conch.ssh import keys
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from mailgw.admin.manhole import manhole_factory
        before = list(SSHServerTransport.supportedCiphers)
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        # The SSH factory inside the idle-timeout wrapper (whose protocols would start a timer on the global reactor).
        factory = manhole_factory({}, key, AuthorizedKeysFile("/nonexistent")).wrappedFactory
        factory.doStart()
        self.addCleanup(factory.doStop)
        proto = factory.buildProtocol(None)
        self.assertEqual(proto.supportedCiphers, [b"aes256-ctr", b"aes192-ctr", b"aes128-ctr"])
        self.assertEqual(proto.supportedMACs, [b"hmac-sha2-512", b"hmac-sha2-384", b"hmac-sha2-256"])
        for kex in proto.supportedKeyExchanges:
            self.assertRegex(kex, rb"^(mlkem768x25519|curve25519|ecdh-sha2-nistp)")
        self.assertIn(b"curve25519-sha256", proto.supportedKeyExchanges)
        self.assertEqual(SSHServerTransport.supportedCiphers, before)
        self.assertIn(b"3des-cbc", SSHServerTransport.supportedCiphers)

    def test_session_eof_and_resize(self) -> None:
        """CHANNEL_EOF closes the shell's channel and a window change resizes the line editor, neither raising."""
        from twisted.conch.interfaces import IConchUser
        from twisted.conch.manhole_ssh import TerminalSessionTransport
        from twisted.conch.manhole_tap import chainedProtocolFactory
        from twisted.internet.protocol import Protocol
        from twisted.python import components
        from mailgw.admin.manhole import ManholeTerminalSession, ManholeUser

        class Channel(Protocol):
            """The SSHSessionProcessProtocol end: records writes and whether it was closed."""
            session = None
            lost = False

            def write(self, data: bytes) -> None:
                pass

            def loseConnection(self) -> None:
                self.lost = True

        comp = components.Componentized()
        comp.setComponent(IConchUser, ManholeUser(comp, b"admin"))
        shell = ManholeTerminalSession(comp)
        shell.transportFactory, shell.chainedProtocolFactory = TerminalSessionTransport, chainedProtocolFactory({})
        self.assertFalse(shell.has_terminal)
        shell.getPty(b"xterm", (24, 80, 0, 0), [])
        channel = Channel()
        shell.openShell(channel)
        shell.windowChanged((40, 132, 0, 0))
        self.assertEqual(shell._terminal.chainedProtocol.terminalProtocol.width, 132)
        shell.eofReceived()
        self.assertTrue(channel.lost)


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


class ShellResultTests(SynchronousTestCase):
    def test_reload_and_health_results_are_text(self):
        """reload() fires with `reload: RESULT` and health() with indented JSON, both shown without quotes."""
        import types

        from mailgw.admin.shell import Shell

        shell = Shell(types.SimpleNamespace(config=None), lambda: defer.succeed("refused"),
                      lambda: defer.succeed({"status": "degraded"}))
        self.assertEqual(repr(self.successResultOf(shell.reload())), "reload: refused")
        self.assertEqual(repr(self.successResultOf(shell.health())), '{\n  "status": "degraded"\n}')
