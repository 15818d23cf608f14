"""Reload on SIGHUP: certificates swap live (new handshakes only), restart-needing changes and bad files are refused."""

from __future__ import annotations

import os
import signal
import socket
import ssl

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw import assemble
from mailgw.admin.reload import changed_keys, plan
from mailgw.admin.reloader import Staged
from mailgw.config import load_config_text
from tests.admin.helpers_ops import tempdir, start_gateway, write_config
from tests.support.certs import make_ca, make_server_cert

BASE = """[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[admin]
http = {{ listen = "tcp:0:interface=127.0.0.1" }}
{extra}"""


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class TLSClient:
    """A blocking TLS client (run in a thread) that remembers the certificate it was shown."""

    def __init__(self, port: int, ca_file: str) -> None:
        context = ssl.create_default_context(cafile=ca_file)
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
        self.cert = self.sock.getpeercert()

    def subject_cn(self) -> str:
        return dict(item[0] for item in self.cert["subject"])["commonName"]

    def echo(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return got

    def close(self) -> None:
        self.sock.close()


class PlanTests(SynchronousTestCase):
    def config(self, body: str):
        return load_config_text("config_version = 1\n" + body)

    def test_changed_keys(self) -> None:
        """Changes are named by dotted key, with added and removed named tables marked."""
        old = self.config('[publish.a]\nlisten = "tcp:10001"\ntarget = "127.0.0.1:1"\nclients = ["any"]\n[auth]\nfailure_delay = "2s"\n')
        new = self.config('[publish.b]\nlisten = "tcp:10001"\ntarget = "127.0.0.1:1"\nclients = ["any"]\n[auth]\nfailure_delay = "3s"\n')
        self.assertEqual(changed_keys(old, new), ["auth.failure_delay", "publish.a (removed)", "publish.b (added)"])

    def test_plan(self) -> None:
        """Listener changes need a restart; auth and client sets are live only when a component registered for them."""
        old = self.config('[publish.a]\nlisten = "tcp:10001"\ntarget = "127.0.0.1:1"\nclients = ["any"]\n')
        new = self.config('[publish.a]\nlisten = "tcp:10001"\ntarget = "127.0.0.1:1"\nclients = ["10.0.0.0/8"]\n[auth]\nlimits = { per_ip = "5/1m" }\n')
        self.assertEqual(plan(old, new, []).restart, ["auth.limits.per_ip", "publish.a.clients"])
        self.assertEqual(plan(old, new, ["auth", "publish.*.clients"]).live, ["auth.limits.per_ip", "publish.a.clients"])
        moved = self.config('[publish.a]\nlisten = "tcp:10002"\ntarget = "127.0.0.1:1"\nclients = ["any"]\n')
        self.assertEqual(plan(old, moved, ["publish.*.clients"]).restart, ["publish.a.listen"])


class RecordingHook:
    """A component's reload hook (docs/operations.md contract): prepare(new) -> Staged(install, discard)."""

    def __init__(self, refuse: bool = False) -> None:
        self.prepared: list = []
        self.installed: list = []
        self.discarded: list = []
        self.refuse = refuse

    def prepare(self, config) -> defer.Deferred:
        if self.refuse:
            from mailgw.errors import ConfigError
            raise ConfigError("auth.limits.per_ip: refused by the test directory")
        self.prepared.append(config)
        return defer.succeed(Staged(install=lambda: self.installed.append(config),
                                    discard=lambda: self.discarded.append(config)))


class ReloadTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.certs = tempdir(self)
        self.ca = make_ca(self.certs)
        self.old = make_server_cert(self.certs, ["localhost", "127.0.0.1"], stem="old", ca=self.ca)
        self.new = make_server_cert(os.path.join(self.certs, "renewed"), ["localhost", "old-name-gone", "127.0.0.1"], stem="new", ca=self.ca)
        self.path, self.state = write_config(self, BASE.format(cert=self.old.cert_file, key=self.old.key_file, extra=""))
        self.gateway = start_gateway(self, self.path)
        svc = self.gateway.listen("tcp:0:interface=127.0.0.1", Factory.forProtocol(Echo), self.gateway.tls.get("t"), label="test.tls")
        self.port = svc.port.getHost().port
        self.results: list[str] = []
        self.waiting: list[defer.Deferred] = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: dict) -> None:
        if event.get("event") == "config_reload" and "result" in event:
            self.results.append(event["result"])
            waiting, self.waiting = self.waiting, []
            for d in waiting:  # outside the logging call, so a test may log and reload again
                reactor.callLater(0, d.callback, event)

    def rewrite(self, cert_file: str, key_file: str, extra: str = "") -> None:
        with open(self.path, "w") as handle:
            handle.write(f'config_version = 1\n[server]\nstate_dir = "{self.state}"\n'
                         + BASE.format(cert=cert_file, key=key_file, extra=extra))

    def sighup(self) -> defer.Deferred:
        """Send ourselves SIGHUP, as `systemctl reload` does; fires with the config_reload log event."""
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        os.kill(os.getpid(), signal.SIGHUP)
        return d

    def connect(self) -> defer.Deferred:
        return deferToThread(TLSClient, self.port, self.ca[2])

    @defer.inlineCallbacks
    def test_sighup_swaps_certificate(self):
        """After SIGHUP a new handshake sees the renewed certificate (from new paths); an open session keeps working."""
        before = yield self.connect()
        self.addCleanup(before.close)
        self.assertEqual(before.subject_cn(), "localhost")
        self.assertNotIn(("DNS", "old-name-gone"), before.cert["subjectAltName"])
        self.rewrite(self.new.cert_file, self.new.key_file)
        event = yield self.sighup()
        self.assertEqual(event["result"], "ok")
        after = yield self.connect()
        self.addCleanup(after.close)
        self.assertIn(("DNS", "old-name-gone"), after.cert["subjectAltName"])
        self.assertEqual((yield deferToThread(before.echo, b"still here\n")), b"still here\n")
        self.assertEqual((yield deferToThread(after.echo, b"new\n")), b"new\n")
        self.assertEqual(self.gateway.tls.get("t").cert_file, self.new.cert_file)
        self.assertEqual(self.gateway.config.tls["t"].cert_file, self.new.cert_file)

    @defer.inlineCallbacks
    def test_same_paths_reread(self):
        """A renewal written over the same files is picked up by SIGHUP with an unchanged config."""
        with open(self.new.cert_file, "rb") as src, open(self.old.cert_file, "wb") as dst:
            dst.write(src.read())
        with open(self.new.key_file, "rb") as src, open(self.old.key_file, "wb") as dst:
            dst.write(src.read())
        event = yield self.sighup()
        self.assertEqual(event["result"], "ok")
        after = yield self.connect()
        self.addCleanup(after.close)
        self.assertIn(("DNS", "old-name-gone"), after.cert["subjectAltName"])

    @defer.inlineCallbacks
    def test_invalid_file_keeps_running_config(self):
        """A new file that fails validation leaves the running configuration and certificate in force."""
        running = self.gateway.config
        with open(self.path, "a") as handle:
            handle.write("\n[imap.x]\nrequre_tls = true\n")
        event = yield self.sighup()
        self.assertEqual(event["result"], "invalid")
        self.assertIn("imap.x.requre_tls: unknown key", event["problems"])
        self.assertIs(self.gateway.config, running)
        client = yield self.connect()
        self.addCleanup(client.close)
        self.assertNotIn(("DNS", "old-name-gone"), client.cert["subjectAltName"])

    @defer.inlineCallbacks
    def test_bad_certificate_refused(self):
        """A certificate whose key does not match is refused and the old one stays."""
        self.rewrite(self.new.cert_file, self.old.key_file)
        event = yield self.sighup()
        self.assertEqual(event["result"], "invalid")
        self.assertIn("tls.t.key_file: the key does not match", event["problems"])
        client = yield self.connect()
        self.addCleanup(client.close)
        self.assertNotIn(("DNS", "old-name-gone"), client.cert["subjectAltName"])

    @defer.inlineCallbacks
    def test_restart_needed_refused(self):
        """A changed listener (here the admin HTTP endpoint) refuses the whole reload, certificate included, saying why."""
        self.rewrite(self.new.cert_file, self.new.key_file)
        with open(self.path) as handle:
            text = handle.read().replace('tcp:0:interface=127.0.0.1', 'tcp:0:interface=127.0.0.2')
        with open(self.path, "w") as handle:
            handle.write(text)
        event = yield self.sighup()
        self.assertEqual(event["result"], "refused")
        self.assertEqual(event["keys"], "admin.http.listen")
        self.assertIn("needs a restart", event["log_format"])
        client = yield self.connect()
        self.addCleanup(client.close)
        self.assertNotIn(("DNS", "old-name-gone"), client.cert["subjectAltName"])

    @defer.inlineCallbacks
    def test_auth_hook(self):
        """Changed auth settings reach a registered prepare hook and are installed; without any auth hook they need a restart."""
        self.gateway.reload_hooks.clear()  # as if no credential checker were running
        self.rewrite(self.old.cert_file, self.old.key_file, extra='[auth]\nlimits = { per_ip = "7/1m" }\n')
        event = yield self.sighup()
        self.assertEqual(event["result"], "refused")
        hook = RecordingHook()
        self.gateway.reload_hooks.append((("auth",), hook.prepare))
        event = yield self.sighup()
        self.assertEqual(event["result"], "ok", event.get("keys"))
        self.assertEqual(hook.installed[0].auth.limits.per_ip, (7, 60.0))
        self.assertEqual(hook.discarded, [])
        self.assertEqual(self.gateway.config.auth.limits.per_ip, (7, 60.0))

    @defer.inlineCallbacks
    def test_hook_refusal(self):
        """A hook raising ConfigError fails the reload; the running configuration and certificate stay."""
        self.gateway.reload_hooks.clear()
        self.gateway.reload_hooks.append((("auth",), RecordingHook(refuse=True).prepare))
        self.rewrite(self.new.cert_file, self.new.key_file, extra='[auth]\nlimits = { per_ip = "7/1m" }\n')
        result = yield assemble.reload_from_source(self.gateway)
        self.assertEqual(result, "failed")
        self.assertEqual(self.gateway.config.auth.limits.per_ip, (20, 300.0))
        client = yield self.connect()
        self.addCleanup(client.close)
        self.assertNotIn(("DNS", "old-name-gone"), client.cert["subjectAltName"])

    @defer.inlineCallbacks
    def test_second_prepare_failure_installs_nothing(self):
        """When the second hook's prepare refuses, the first hook's prepared change is discarded, never installed."""
        self.gateway.reload_hooks.clear()
        first, second = RecordingHook(), RecordingHook(refuse=True)
        self.gateway.reload_hooks += [(("auth",), first.prepare), (("auth",), second.prepare)]
        self.rewrite(self.new.cert_file, self.new.key_file, extra='[auth]\nlimits = { per_ip = "7/1m" }\n')
        result = yield assemble.reload_from_source(self.gateway)
        self.assertEqual(result, "failed")
        self.assertEqual(len(first.prepared), 1)
        self.assertEqual(first.installed, [])
        self.assertEqual(first.discarded, first.prepared)
        self.assertEqual(self.gateway.config.auth.limits.per_ip, (20, 300.0))
        client = yield self.connect()
        self.addCleanup(client.close)
        self.assertNotIn(("DNS", "old-name-gone"), client.cert["subjectAltName"])
