"""docs/clients.md, verified: msmtp, mbsync, fetchmail, mutt and curl set up as documented against the real twistd process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.support.certs import make_server_cert
from tests.support.gateway import Gateway, environment

PW = "Cl1ent-pw"

CONFIG = """
config_version = 1

[server]
hostname = "localhost"
state_dir = "{base}/state"

[tls.mail]
cert_file = "{cert}"
key_file = "{key}"

[auth]
backends = ["local"]
failure_delay = "0s"

[auth.local]
users_file = "{base}/users"

[imap.secure]
bind = ["tcp:0:interface=127.0.0.1"]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "mail"

[submission.relay]
bind = ["tcp:0:interface=127.0.0.1"]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "mail"
local_domains = ["example.test"]
"""

# The client files of docs/clients.md, with the test's ports and paths.
MSMTPRC = """defaults
tls on
tls_trust_file {ca}
auth plain
logfile {base}/msmtp.log

account submission
host localhost
port {submission}
tls_starttls on
from alice@example.test
user alice
password {pw}

account smtps
host localhost
port {smtps}
tls_starttls off
from alice@example.test
user alice
password {pw}
"""

MBSYNCRC = """IMAPAccount mailgw
Host localhost
Port {port}
SSLType {ssl_type}
CertificateFile {ca}
User bob
Pass {pw}
AuthMechs PLAIN

IMAPStore mailgw-remote
Account mailgw

MaildirStore mailgw-local
Path {base}/mbsync/
Inbox {base}/mbsync/INBOX
SubFolders Verbatim

Channel mailgw
Far :mailgw-remote:
Near :mailgw-local:
Patterns *
Create Both
SyncState *
"""

FETCHMAILRC = """poll localhost service {port} protocol IMAP auth password
    user "bob" there password "{pw}" is "bob" here
    {ssl} sslcertck sslcertfile "{ca}"
    keep fetchall
    mda "/bin/sh -c 'cat >> {base}/fetched.mbox'"
"""

MUTTRC = """set from = "alice@example.test"
set ssl_force_tls = yes
set ssl_starttls = yes
set ssl_ca_certificates_file = "{ca}"
set smtp_url = "smtp://alice@localhost:{submission}/"
set smtp_pass = "{pw}"
set smtp_authenticators = "plain:login"
set folder = "imaps://alice@localhost:{imaps}/"
set imap_pass = "{pw}"
set imap_authenticators = "plain:login"
set spoolfile = "+INBOX"
set record = ""
"""


def message(subject: str) -> bytes:
    return f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


class ClientSetupTests(SynchronousTestCase):
    """One real gateway per test: IMAP 143-style (STARTTLS) and 993-style, submission 587-style and 465-style."""

    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="mailgw-clients-")
        self.addCleanup(shutil.rmtree, self.base, True)
        files = make_server_cert(self.base, ["localhost", "127.0.0.1"])
        self.ca = files.ca_file
        users = os.path.join(self.base, "users")
        os.close(os.open(users, os.O_WRONLY | os.O_CREAT, 0o600))
        config = os.path.join(self.base, "mailgw.toml")
        with open(config, "w") as handle:
            handle.write(CONFIG.format(base=self.base, cert=files.cert_file, key=files.key_file))
        for user in ("alice", "bob"):
            result = subprocess.run([sys.executable, "-m", "mailgw.cli", "--config", config, "user", "add", user,
                                     "--address", f"{user}@example.test", "--password-stdin"],
                                    input=PW + "\n", capture_output=True, text=True, env=environment(), timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr)
        self.gateway = Gateway(config, self.base).start(expect=4)
        self.addCleanup(self.gateway.stop)
        port = self.gateway.port
        self.ports = {"imap": port("imap.secure.bind[0]"), "imaps": port("imap.secure.bind_tls[0]"),
                      "submission": port("submission.relay.bind[0]"), "smtps": port("submission.relay.bind_tls[0]")}

    def need(self, program: str) -> None:
        if shutil.which(program) is None:
            self.skipTest(f"{program} is not installed (.ci/run installs it)")

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.base, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # fetchmail refuses a readable rc file
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return path

    def run_client(self, argv: list[str], stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess:
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.base, "TERM": "xterm", **env}
        result = subprocess.run(argv, input=stdin, capture_output=True, env=environ, cwd=self.base, timeout=60)
        self.assertEqual(result.returncode, 0, (result.stdout + result.stderr).decode("utf-8", "replace"))
        return result

    def inbox(self, user: str) -> list[bytes]:
        root = os.path.join(self.base, "state", "mail", user)
        out = []
        for sub in ("new", "cur"):
            for name in sorted(os.listdir(os.path.join(root, sub))):
                with open(os.path.join(root, sub, name), "rb") as handle:
                    out.append(handle.read())
        return out

    def submit_two(self) -> None:
        """Two messages for bob, submitted with Python's smtplib (the readers' tests need mail to read)."""
        import smtplib
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca)
        with smtplib.SMTP_SSL("127.0.0.1", self.ports["smtps"], timeout=10, context=ctx) as s:
            s.login("alice", PW)
            for subject in ("first", "second"):
                s.sendmail("alice@example.test", ["bob@example.test"], message(subject))

    def test_msmtp(self) -> None:
        """msmtp submits with STARTTLS on the submission port and with implicit TLS on the SMTPS port, AUTH PLAIN, the CA file trusted."""
        self.need("msmtp")
        rc = self.write("msmtprc", MSMTPRC.format(ca=self.ca, base=self.base, pw=PW, **self.ports))
        for account in ("submission", "smtps"):
            self.run_client(["msmtp", "-C", rc, "-a", account, "bob@example.test"], message(f"via msmtp {account}"))
        subjects = [m for m in self.inbox("bob") if b"Subject: via msmtp" in m]
        self.assertEqual(len(subjects), 2)
        with open(os.path.join(self.base, "msmtp.log")) as handle:
            log = handle.read()
        self.assertEqual(log.count("tls=on auth=on user=alice"), 2, log)

    def test_mbsync(self) -> None:
        """mbsync (isync 1.4 keywords) copies bob's INBOX over IMAPS and over STARTTLS, verifying the certificate."""
        self.need("mbsync")
        self.submit_two()
        for ssl_type, port in (("IMAPS", self.ports["imaps"]), ("STARTTLS", self.ports["imap"])):
            shutil.rmtree(os.path.join(self.base, "mbsync"), True)
            os.makedirs(os.path.join(self.base, "mbsync"))
            rc = self.write("mbsyncrc", MBSYNCRC.format(port=port, ssl_type=ssl_type, ca=self.ca, pw=PW, base=self.base))
            self.run_client(["mbsync", "-c", rc, "-a"])
            new = os.listdir(os.path.join(self.base, "mbsync", "INBOX", "new"))
            self.assertEqual(len(new), 2, ssl_type)

    def test_fetchmail(self) -> None:
        """fetchmail fetches bob's mail over IMAPS (`ssl`) and over STARTTLS (`sslproto tls1.2+`), checking the certificate."""
        self.need("fetchmail")
        self.submit_two()
        mbox = os.path.join(self.base, "fetched.mbox")
        for ssl, port in (("ssl", self.ports["imaps"]), ("sslproto tls1.2+", self.ports["imap"])):
            rc = self.write("fetchmailrc", FETCHMAILRC.format(port=port, pw=PW, ssl=ssl, ca=self.ca, base=self.base))
            result = self.run_client(["fetchmail", "-f", rc, "-v", "--nosyslog", "--pidfile",
                                      os.path.join(self.base, "fetchmail.pid")])
            self.assertIn(b"normal termination, status 0", result.stdout + result.stderr)
        with open(mbox, "rb") as handle:
            self.assertEqual(handle.read().count(b"Subject: "), 4)  # `keep fetchall`: both messages, twice

    def test_mutt(self) -> None:
        """mutt sends through smtp_url with STARTTLS and opens its IMAPS folder (in a pseudo-terminal), both with AUTH PLAIN."""
        self.need("mutt")
        self.need("script")
        rc = self.write("muttrc", MUTTRC.format(ca=self.ca, pw=PW, **self.ports))
        self.run_client(["mutt", "-n", "-F", rc, "-s", "via mutt", "bob@example.test"], b"body via mutt\n")
        self.assertTrue(any(b"Subject: via mutt" in m for m in self.inbox("bob")))
        self.run_client(["script", "-qec", f"mutt -n -F {rc} -e 'push <quit>'", "/dev/null"])
        self.gateway.wait_for('auth_ok proto=imap listener=imap.secure rip=127.0.0.1 user="alice" account=alice mech=PLAIN')
        self.gateway.wait_for('auth_ok proto=smtp listener=submission.relay rip=127.0.0.1 user="alice"')

    def test_curl(self) -> None:
        """curl reads over IMAPS and IMAP+STARTTLS (--ssl-reqd) and submits over SMTP+STARTTLS and SMTPS, trusting --cacert."""
        self.need("curl")
        self.submit_two()
        ca = ["--cacert", self.ca, "-sS", "-u", f"bob:{PW}"]
        first = self.run_client(["curl", *ca, f"imaps://localhost:{self.ports['imaps']}/INBOX;UID=1"]).stdout
        self.assertIn(b"Subject: first", first)
        listing = self.run_client(["curl", *ca, "--ssl-reqd", f"imap://localhost:{self.ports['imap']}/"]).stdout
        self.assertIn(b'"/" INBOX', listing)
        path = os.path.join(self.base, "m.eml")
        with open(path, "wb") as handle:
            handle.write(message("via curl"))
        submit = ["--cacert", self.ca, "-sS", "-u", f"alice:{PW}", "--mail-from", "alice@example.test",
                  "--mail-rcpt", "bob@example.test", "-T", path]
        self.run_client(["curl", *submit, "--ssl-reqd", f"smtp://localhost:{self.ports['submission']}"])
        self.run_client(["curl", *submit, f"smtps://localhost:{self.ports['smtps']}"])
        self.assertEqual(sum(b"Subject: via curl" in m for m in self.inbox("bob")), 2)
