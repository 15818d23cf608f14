"""assemble.build_imap: an [imap.NAME] table becomes a STARTTLS and an IMAPS listener; and the real twistd process."""

from __future__ import annotations

import imaplib
import os
import ssl
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from mailgw import assemble
from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.service import AuthService
from mailgw.auth.usersfile import LocalUser, format_users, hash_password
from mailgw.config import load_config_text
from mailgw.net.sessions import SessionRegistry
from mailgw.store.memory import MemoryStore
from tests.support.certs import make_server_cert
from tests.support.gateway import Gateway

PASSWORD = "S3cret!pw"
CONFIG = """
config_version = 1
[server]
hostname = "localhost"
state_dir = "{state}"
[tls.t]
cert_file = "{cert}"
key_file = "{key}"
[auth]
backends = ["local"]
failure_delay = "0s"
[auth.local]
users_file = "{users}"
[imap.t]
bind = ["tcp:0:interface=127.0.0.1"]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
require_tls = true
auth = ["basic"]
append_limit = "10M"
"""


def write_files(base: str) -> tuple[str, Any]:
    files = make_server_cert(base, ["localhost", "127.0.0.1"])
    users = os.path.join(base, "users")
    fd = os.open(users, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, format_users([LocalUser("alice", hash_password(PASSWORD, "bcrypt"), ("alice@localhost",))]).encode())
    os.close(fd)
    text = CONFIG.format(state=os.path.join(base, "state"), cert=files.cert_file, key=files.key_file, users=users)
    return text, files


def session(port_plain: int, port_tls: int, ca_file: str) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=ca_file)
    out: dict[str, Any] = {}
    c = imaplib.IMAP4("127.0.0.1", port_plain)
    out["plain_caps"] = c.capabilities
    c.starttls(ssl_context=ctx)
    out["login"] = c.login("alice", PASSWORD)[0]
    out["caps"] = c.capability()[1][0]
    c.logout()
    s = imaplib.IMAP4_SSL("127.0.0.1", port_tls, ssl_context=ctx)
    out["imaps_caps"] = s.capabilities
    s.login("alice", PASSWORD)
    out["append"] = s.append("INBOX", None, None, b"Subject: x\r\n\r\nbody\r\n")[0]
    out["select"] = s.select("INBOX")
    s.logout()
    return out


class AssembleTests(TestCase):
    """build_imap with the memory store and an in-memory directory, in-process."""

    timeout = 60

    @defer.inlineCallbacks
    def test_build_imap(self) -> Any:
        """Both listeners come up with the configured policy (TLS first, APPENDLIMIT from the config)."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        text, files = write_files(base)
        config = load_config_text(text)
        directory = MemoryDirectory()
        directory.add_user("alice", PASSWORD, ["alice@localhost"])
        gateway = assemble.Gateway(config=config, reactor=reactor, tls=assemble.build_tls(config),
                                   sessions=SessionRegistry(), disk_pool=ThreadPool(1, 1))
        gateway.store = MemoryStore()
        gateway.auth = AuthService([directory], reactor, failure_delay=0)
        gateway.root = assemble.MailgwService(gateway)
        assemble.build_imap(gateway, "t", config.imap["t"])
        gateway.root.startService()
        self.addCleanup(gateway.root.stopService)
        yield gateway.root.ready()
        ports = {svc.label: svc.port.getHost().port for svc in gateway.root.listeners}
        out = yield deferToThread(session, ports["imap.t.bind[0]"], ports["imap.t.bind_tls[0]"], files.ca_file)
        self.assertIn("LOGINDISABLED", out["plain_caps"])
        self.assertEqual(out["login"], "OK")
        self.assertIn(b"APPENDLIMIT=10485760", out["caps"])
        self.assertIn("AUTH=PLAIN", out["imaps_caps"])
        self.assertNotIn("STARTTLS", out["imaps_caps"])
        self.assertEqual(out["append"], "OK")
        self.assertEqual(out["select"], ("OK", [b"1"]))


class RealProcessTests(TestCase):
    """`twistd -n mailgw --config ...` serving IMAP on loopback."""

    timeout = 90

    def test_real_process(self) -> Any:
        """The real process serves STARTTLS and IMAPS with the users file and the configured store."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        text, files = write_files(base)
        config = os.path.join(base, "mailgw.toml")
        with open(config, "w") as f:
            f.write(text)
        gw = Gateway(config, base)
        self.addCleanup(gw.stop)
        gw.start(expect=0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = "".join(gw.output)
            if "imap.t: no store or credential checker assembled" in out:
                self.fail("assemble.py did not wire the store and credential checker:\n" + out)
            if "imap.t.bind_tls[0]" in gw.ports and "imap.t.bind[0]" in gw.ports:
                break
            if gw.process is not None and gw.process.poll() is not None:
                self.fail("gateway exited:\n" + out)
            time.sleep(0.05)
        else:
            self.fail("gateway did not start:\n" + "".join(gw.output))

        def check(res: dict[str, Any]) -> None:
            self.assertEqual(res["login"], "OK")
            self.assertEqual(res["append"], "OK")
            self.assertEqual(res["select"][0], "OK")

        return deferToThread(session, gw.port("imap.t.bind[0]"), gw.port("imap.t.bind_tls[0]"),
                             files.ca_file).addCallback(check)


SUBMISSION = """
[submission.t]
bind = ["tcp:0:interface=127.0.0.1"]
tls = "t"
local_domains = ["localhost"]
"""


class RealProcessDeliveryTests(TestCase):
    """Across components in the real process: SMTP submission delivers, an IMAP client in IDLE sees it."""

    timeout = 90

    def test_submission_to_idle(self) -> Any:
        """A message submitted over 587 (STARTTLS + AUTH) to a local address is pushed to IDLE as EXISTS."""
        import smtplib

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        text, files = write_files(base)
        config = os.path.join(base, "mailgw.toml")
        with open(config, "w") as f:
            f.write(text + SUBMISSION)
        gw = Gateway(config, base)
        self.addCleanup(gw.stop)
        gw.start(expect=3)
        ctx = ssl.create_default_context(cafile=files.ca_file)

        def run() -> list[Any]:
            from imapclient import IMAPClient
            with IMAPClient("127.0.0.1", gw.port("imap.t.bind_tls[0]"), ssl=True, ssl_context=ctx) as c:
                c.login("alice", PASSWORD)
                c.select_folder("INBOX")
                c.idle()
                with smtplib.SMTP("127.0.0.1", gw.port("submission.t.bind[0]"), timeout=20) as s:
                    s.starttls(context=ctx)
                    s.login("alice", PASSWORD)
                    s.sendmail("alice@localhost", ["alice@localhost"],
                               b"From: alice@localhost\r\nTo: alice@localhost\r\nSubject: via smtp\r\n\r\nhello\r\n")
                seen: list[Any] = []
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not any(r[1] == b"EXISTS" for r in seen):
                    seen += c.idle_check(timeout=2)
                c.idle_done()
                seen.append(c.fetch([1], ["ENVELOPE"])[1][b"ENVELOPE"].subject)
            return seen

        def check(seen: list[Any]) -> None:
            self.assertIn((1, b"EXISTS"), seen[:-1])
            self.assertEqual(seen[-1], b"via smtp")

        return deferToThread(run).addCallback(check)

    def test_stray_paren_mail_does_not_stop_the_process(self) -> Any:
        """Issue 12: mail with `Cc: a) b` (alone and attached as message/rfc822) submitted over SMTP; the
        recipient's ENVELOPE/BODYSTRUCTURE FETCH is answered and another IMAP connection's NOOP takes < 1 s."""
        import importlib.util
        import smtplib

        if importlib.util.find_spec("mailgw.smtp") is None:
            raise SkipTest("the submission relay is not in this tree")
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        text, files = write_files(base)
        config = os.path.join(base, "mailgw.toml")
        with open(config, "w") as f:
            f.write(text + SUBMISSION)
        gw = Gateway(config, base)
        self.addCleanup(gw.stop)
        gw.start(expect=3)
        ctx = ssl.create_default_context(cafile=files.ca_file)
        stray = b"From: alice@localhost\r\nTo: alice@localhost\r\nCc: a) b\r\nSubject: stray\r\n\r\nhello\r\n"
        attached = (b"From: alice@localhost\r\nTo: alice@localhost\r\nSubject: fwd\r\n"
                    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: message/rfc822\r\n\r\n"
                    + stray + b"\r\n--zz--\r\n")

        def run() -> dict[str, Any]:
            port = gw.port("imap.t.bind_tls[0]")
            with smtplib.SMTP("127.0.0.1", gw.port("submission.t.bind[0]"), timeout=20) as s:
                s.starttls(context=ctx)
                s.login("alice", PASSWORD)
                for msg in (stray, attached):
                    s.sendmail("alice@localhost", ["alice@localhost"], msg)
            out: dict[str, Any] = {}
            a = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=15)
            b = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=15)
            try:
                a.login("alice", PASSWORD)
                b.login("alice", PASSWORD)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and a.select("INBOX")[1] != [b"2"]:
                    a.noop()  # delivery is asynchronous: wait until both messages are in
                a.send(b"f1 FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY)\r\n")
                t0 = time.monotonic()
                out["noop"] = b.noop()[0]
                out["latency"] = time.monotonic() - t0
                lines = b""
                while not lines.endswith(b"\r\n") or b"\r\nf1 " not in b"\r\n" + lines:
                    got = a.readline()
                    if not got:
                        break
                    lines += got
                out["fetch"] = lines
            finally:
                a.shutdown()
                b.shutdown()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["noop"], "OK")
            self.assertLess(out["latency"], 1.0)
            self.assertIn(b"f1 OK Fetch completed.", out["fetch"])
            # message 1 ENVELOPE, message 2 BODYSTRUCTURE and BODY (the attached message's envelope)
            self.assertEqual(out["fetch"].count(b'((NIL NIL "ab" "MISSING_DOMAIN"))'), 3)

        return deferToThread(run).addCallback(check)

