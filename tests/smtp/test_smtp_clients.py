"""Real mail clients against the in-process submission server: swaks (STARTTLS, implicit TLS, PLAIN, LOGIN), curl (NTLM)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.smtp.smtp_support import SubmissionHarness

PW = SubmissionHarness.PASSWORD


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        raise SkipTest(f"{tool} not installed")


class ClientTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.h = SubmissionHarness(self, reactor)

    async def run_tool(self, argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
        return await deferToThread(subprocess.run, argv, input=stdin, capture_output=True, timeout=30)

    def swaks(self, *extra: str) -> list[str]:
        return ["swaks", "--server", "127.0.0.1", "--from", "alice@example.test", "--to", "bob@example.test",
                "--header", "From: alice@example.test", "--auth-user", "alice", "--auth-password", PW,
                "--helo", "client.example", *extra]

    async def test_swaks_starttls_plain(self) -> None:
        """swaks --tls --auth PLAIN delivers into bob's INBOX."""
        need("swaks")
        r = await self.run_tool(self.swaks("--port", str(self.h.plain), "--tls", "--auth", "PLAIN"))
        self.assertEqual(r.returncode, 0, r.stdout.decode()[-2000:])
        self.assertEqual(len(self.h.inbox("bob")), 1)

    async def test_swaks_implicit_login(self) -> None:
        """swaks --tlsc --auth LOGIN delivers over implicit TLS."""
        need("swaks")
        r = await self.run_tool(self.swaks("--port", str(self.h.implicit), "--tlsc", "--auth", "LOGIN"))
        self.assertEqual(r.returncode, 0, r.stdout.decode()[-2000:])
        self.assertIn(b"235 2.7.0", r.stdout)
        self.assertEqual(len(self.h.inbox("bob")), 1)

    async def test_swaks_no_tls_refused(self) -> None:
        """swaks without TLS cannot authenticate and nothing is delivered."""
        need("swaks")
        r = await self.run_tool(self.swaks("--port", str(self.h.plain), "--auth", "PLAIN"))
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.h.inbox("bob"), [])

    async def test_swaks_wrong_password(self) -> None:
        """A wrong password gets 535 5.7.8 from swaks' point of view."""
        need("swaks")
        argv = self.swaks("--port", str(self.h.implicit), "--tlsc", "--auth", "PLAIN")
        argv[argv.index(PW)] = "wrong"
        r = await self.run_tool(argv)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"535 5.7.8 Authentication credentials invalid", r.stdout)

    async def curl(self, url: str, *extra: str) -> subprocess.CompletedProcess:
        need("curl")
        msg = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: curl\r\n\r\nvia curl\r\n"
        return await self.run_tool(["curl", "-sS", "--ssl-reqd", url, "--cacert", self.h.certs["ca"],
                                    "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
                                    "-T", "-", *extra], stdin=msg)

    async def test_curl_ntlm_starttls(self) -> None:
        """curl smtp:// --ssl-reqd with AUTH NTLM authenticates through the shared NTLM acceptor."""
        r = await self.curl(f"smtp://127.0.0.1:{self.h.plain}/client.example", "-u", f"alice:{PW}",
                            "--login-options", "AUTH=NTLM")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(len(self.h.inbox("bob")), 1)
        self.assertTrue(self.h.inbox("bob")[0].endswith(b"via curl\r\n"))

    async def test_curl_smtps_plain(self) -> None:
        """curl smtps:// (implicit TLS) with AUTH PLAIN delivers."""
        r = await self.curl(f"smtps://127.0.0.1:{self.h.implicit}/client.example", "-u", f"alice:{PW}",
                            "--login-options", "AUTH=PLAIN")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(len(self.h.inbox("bob")), 1)

    async def test_curl_ntlm_wrong_password(self) -> None:
        """curl with a wrong NTLM password exits 67 (login denied) and nothing is delivered."""
        r = await self.curl(f"smtp://127.0.0.1:{self.h.plain}/client.example", "-u", "alice:wrong",
                            "--login-options", "AUTH=NTLM")
        self.assertEqual(r.returncode, 67, r.stderr.decode())
        self.assertEqual(self.h.inbox("bob"), [])
