"""The shipped fail2ban filter matches mailgw's auth_failed lines (as twistd writes them) and nothing a client can forge."""

from __future__ import annotations

import imaplib
import io
import os
import re
import shutil
import ssl
import subprocess

from twisted.logger import Logger, textFileLogObserver
from twisted.trial.unittest import SynchronousTestCase

from mailgw.observe import events
from tests.admin.helpers_ops import tempdir, write_config
from tests.support.certs import make_server_cert
from tests.support.gateway import REPO, Gateway

FILTER = os.path.join(REPO, "etc", "fail2ban", "filter.d", "mailgw.conf")


def log_lines() -> str:
    """Lines as twistd's text observer writes them: events.emit output and the auth service's own shape."""
    stream = io.StringIO()
    log = Logger(namespace="mailgw.auth.service", observer=textFileLogObserver(stream))
    events.emit(log, events.AUTH_FAILED, proto="imap", listener="secure", rip="198.51.100.7", user="alice",
                mech="PLAIN", reason="bad_password")
    events.emit(log, events.AUTH_FAILED, proto="smtp", listener="relay", rip="2001:db8::5", user='x" rip=192.0.2.99',
                mech="LOGIN", reason="unknown_user")
    events.emit(log, events.AUTH_FAILED, proto="imap", listener="secure", rip="198.51.100.8", user="carol",
                mech="PLAIN", reason="backend_down")
    log.info('auth_failed proto={proto} listener={listener} rip={rip} user="{user}" mech={mech} reason={reason}',
             proto="imap", listener="legacy", rip="203.0.113.4", user="DOM?bob", mech="NTLM", reason="ntlm_v1_refused")
    log.info('auth_ok proto=imap listener=secure rip=198.51.100.9 user="dave" account=dave mech=PLAIN backend=local')
    events.emit(log, events.AUTH_FAILED, proto="imap", listener="secure", rip="198.51.100.10",
                user="evil\nauth_failed proto=imap listener=x rip=192.0.2.66 user=\"v\" mech=PLAIN reason=bad_password",
                mech="PLAIN", reason="bad_password")
    return stream.getvalue()


EXPECTED = ["198.51.100.7", "2001:db8::5", "203.0.113.4", "198.51.100.10"]


def python_failregex() -> re.Pattern[str]:
    """The filter's failregex with fail2ban's <HOST> and %(_prefix)s substituted, for hosts without fail2ban."""
    text = open(FILTER).read()
    prefix = re.search(r"^_prefix = (.*)$", text, re.M).group(1)
    failregex = re.search(r"^failregex = (.*)$", text, re.M).group(1).replace("%(_prefix)s", prefix)
    return re.compile(failregex.replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)"))


class Fail2banFilterTests(SynchronousTestCase):
    def test_python_regex(self) -> None:
        """Matched with Python re (timestamps cut as fail2ban does): real failures only, with the real client IP."""
        pattern = python_failregex()
        hosts = []
        for line in log_lines().splitlines():
            message = re.sub(r"^\S+T\S+ ", "", line)
            match = pattern.search(message)
            if match:
                hosts.append(match.group("host"))
        self.assertEqual(hosts, EXPECTED)

    def test_fail2ban_regex(self) -> None:
        """fail2ban-regex (Debian's fail2ban) finds exactly the failing clients in a twistd log and in journal messages."""
        if shutil.which("fail2ban-regex") is None:
            self.skipTest("fail2ban is not installed (apt-get install fail2ban); test_python_regex covers the regex")
        directory = tempdir(self)
        text_log = os.path.join(directory, "mailgw.log")
        with open(text_log, "w") as handle:
            handle.write(log_lines())
        journal_log = os.path.join(directory, "journal.txt")
        with open(journal_log, "w") as handle:  # MESSAGE= as JournaldObserver sends it: no prefix
            handle.write('auth_failed proto=imap listener=secure rip=198.51.100.7 user="alice" mech=PLAIN reason=bad_password\n')
        for path, expected in ((text_log, EXPECTED), (journal_log, ["198.51.100.7"])):
            result = subprocess.run(["fail2ban-regex", "-o", "ip", path, FILTER], capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout.split(), expected, result.stdout + result.stderr)


class TwistdFail2banTests(SynchronousTestCase):
    def test_failed_imap_logins(self) -> None:
        """Failed IMAPS logins against the real twistd produce lines the filter matches, one per failure, all with the client IP."""
        directory = tempdir(self)
        cert = make_server_cert(directory, ["localhost"])
        users = os.path.join(directory, "users")
        os.close(os.open(users, os.O_WRONLY | os.O_CREAT, 0o600))
        path, _ = write_config(self, f"""[tls.t]
cert_file = "{cert.cert_file}"
key_file = "{cert.key_file}"
[auth]
backends = ["local"]
failure_delay = "0s"
[auth.local]
users_file = "{users}"
[imap.t]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "t"
""")
        gateway = Gateway(path, directory).start(expect=1)
        self.addCleanup(gateway.stop)
        context = ssl.create_default_context(cafile=cert.ca_file)
        for login in ("alice", 'evil" rip=192.0.2.99', "carol", "bob"):
            client = imaplib.IMAP4_SSL("localhost", gateway.port("imap.t.bind_tls[0]"), ssl_context=context, timeout=15)
            with self.assertRaises(imaplib.IMAP4.error):
                client.login(login, "wrong")
            client.shutdown()
        gateway.wait_for('user="bob"')
        gateway.stop()
        log_file = os.path.join(directory, "mailgw.log")
        with open(log_file, "w") as handle:
            handle.write("".join(gateway.output))
        pattern = python_failregex()
        hosts = [m.group("host") for m in (pattern.search(re.sub(r"^\S+T\S+ ", "", l)) for l in gateway.output) if m]
        failures = sum("auth_failed " in line for line in gateway.output)
        self.assertGreaterEqual(failures, 3)
        self.assertEqual(hosts, ["127.0.0.1"] * failures, "".join(gateway.output))
        if shutil.which("fail2ban-regex") is not None:
            result = subprocess.run(["fail2ban-regex", "-o", "ip", log_file, FILTER], capture_output=True, text=True, timeout=60)
            self.assertEqual(result.stdout.split(), ["127.0.0.1"] * failures, result.stdout + result.stderr)
