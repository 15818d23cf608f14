"""A 50 MB submission delivered locally into the Maildir store: the server's RSS stays flat (issue 13, defect 3)."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailgw.store.maildir.account import MaildirStore
from tests.smtp.smtp_support import SubmissionHarness

BIG = 50_000_000

CLIENT = r"""
import smtplib, ssl, sys
port, password, size, ca = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
line = b"y" * 76 + b"\r\n"
body = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: big\r\n\r\n" + line * (size // len(line))
with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
    s.starttls(context=ssl.create_default_context(cafile=ca))
    s.login("alice", password)
    s.sendmail("alice@example.test", ["bob@example.test"], body)
print(len(body))
"""


def status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class LocalDeliveryMemoryTests(TestCase):
    """The DATA spool is handed to the store as a file and copied in chunks."""

    async def test_50mb_local_delivery_keeps_rss_flat(self) -> None:
        """smtplib sends 50 MB to a local user: delivered intact into Maildir, server RSS grows by less than 20 MB."""
        h = SubmissionHarness(self, reactor)
        h.set_policy(max_message_size=64 * 1024 * 1024)
        store = MaildirStore(os.path.join(h.dir, "mail", "{user}"), reactor, h.pool, hostname="test.example",
                             poll_interval=0, idle_unload=0)
        h.factory.local.store = h.implicit_factory.local.store = store
        await store.open_account("bob")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM starts again from the current RSS
        base = status_kb("VmRSS")
        out = await deferToThread(subprocess.run, [sys.executable, "-c", CLIENT, str(h.plain), h.PASSWORD, str(BIG),
                                                   h.certs["ca"]], capture_output=True, timeout=180, check=True)
        growth = status_kb("VmHWM") - base
        size = int(out.stdout.split()[0])
        self.assertLess(growth, 20 * 1024, f"local delivery grew RSS by {growth} kB")
        view = await (await store.open_account("bob")).open_folder("INBOX")
        [info] = view.messages()
        body = await view.open_message(info.uid)
        tail = await body.read(body.size - 78, 78)
        body.close()
        view.close()
        self.assertGreater(info.size, size)  # plus the Received header
        self.assertEqual(tail, b"y" * 76 + b"\r\n")  # the last line arrived
