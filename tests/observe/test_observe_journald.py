"""[log] format = "journald": native-protocol datagrams, checked on a socket standing in for /run/systemd/journal/socket."""

from __future__ import annotations

import io
import os
import socket

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from mailgw.observe import events
from mailgw.observe.log import JournaldObserver, make_observer
from tests.admin.helpers_ops import tempdir


def parse_journal(data: bytes) -> dict[str, str]:
    """journald's native format: KEY=value lines, or KEY\\n<u64 LE length><bytes>\\n for binary-safe values."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        newline = data.index(b"\n", i)
        line = data[i:newline]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = newline + 1
        else:
            key = line
            size = int.from_bytes(data[newline + 1:newline + 9], "little")
            value = data[newline + 9:newline + 9 + size]
            assert data[newline + 9 + size:newline + 10 + size] == b"\n"
            i = newline + 10 + size
        fields[key.decode()] = value.decode()
    return fields


class JournaldTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.join(tempdir(self), "journal.socket")
        self.sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sink.bind(self.path)
        self.sink.settimeout(5)
        self.addCleanup(self.sink.close)

    def test_auth_failure_fields(self) -> None:
        """An auth failure arrives as one datagram: the fail2ban line as MESSAGE, priority, identifier, event fields."""
        log = Logger(observer=make_observer("journald", "info", journal_path=self.path))
        events.emit(log, events.AUTH_FAILED, "warn", proto="imap", listener="secure", rip="198.51.100.7",
                    user="alice", mech="PLAIN", reason="bad_password")
        fields = parse_journal(self.sink.recv(65536))
        self.assertEqual(fields["MESSAGE"], 'auth_failed proto=imap listener=secure rip=198.51.100.7 user="alice" mech=PLAIN reason=bad_password')
        self.assertEqual(fields["PRIORITY"], "4")
        self.assertEqual(fields["SYSLOG_IDENTIFIER"], "mailgw")
        self.assertEqual(fields["MAILGW_EVENT"], "auth_failed")
        self.assertEqual(fields["MAILGW_RIP"], "198.51.100.7")
        self.assertEqual(fields["MAILGW_USER"], "alice")

    def test_multiline_and_levels(self) -> None:
        """A multi-line message uses the length-prefixed form; info is priority 6; debug is filtered out at info."""
        log = Logger(observer=make_observer("journald", "info", journal_path=self.path))
        log.debug("not sent")
        log.info("first line\nsecond line = with equals", event="test.multi")
        fields = parse_journal(self.sink.recv(65536))
        self.assertEqual(fields["MESSAGE"], "first line\nsecond line = with equals")
        self.assertEqual(fields["PRIORITY"], "6")
        self.sink.setblocking(False)
        self.assertRaises(BlockingIOError, self.sink.recv, 65536)

    def test_no_journal_falls_back(self) -> None:
        """Without a journal socket the event is written as text instead of being lost."""
        stream = io.StringIO()
        observer = JournaldObserver(self.path + ".missing", fallback=make_observer("text", "info", stream))
        Logger(observer=observer).info("kept {n}", n=1)
        self.assertIn("kept 1", stream.getvalue())
