"""Security events are one sanitised line; [log] format selects text, JSON or journald output."""

from __future__ import annotations

import io
import json

from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailgw.config import load_config_text
from mailgw.observe import events
from mailgw.observe.log import encode_journal, make_observer


class EventTests(SynchronousTestCase):
    def test_sanitised_line(self) -> None:
        """CR, LF, NUL and quotes in client-supplied values cannot forge a log line."""
        text = events.line(events.AUTH_FAILED, proto="imap", rip="127.0.0.2", user='al"ice\r\nauth_ok user=root\x00', mech="PLAIN", reason="bad_password")
        self.assertEqual(text, 'auth_failed proto=imap rip=127.0.0.2 user="al\\"ice\\x0d\\x0aauth_ok user=root\\x00" mech=PLAIN reason=bad_password')
        self.assertNotIn("\n", text)

    def test_emit_structured(self) -> None:
        """emit() logs the fixed line and keeps the fields for JSON observers."""
        with capturedLogs() as captured:
            events.emit(Logger(), events.AUTH_FAILED, proto="smtp", rip="127.0.0.1", user="bob")
        self.assertEqual(captured[0]["event"], "auth_failed")
        self.assertEqual(captured[0]["rip"], "127.0.0.1")
        self.assertEqual(captured[0]["mailgw_line"], 'auth_failed proto=smtp rip=127.0.0.1 user="bob"')


class FormatTests(SynchronousTestCase):
    def test_json_lines(self) -> None:
        """The JSON observer writes one parseable object per event with the event key."""
        stream = io.StringIO()
        observer = make_observer("json", "info", stream)
        Logger(observer=observer).info("hello {who}", who="world", event="test.event")
        record = json.loads(stream.getvalue().strip().strip("\x1e"))
        self.assertEqual(record["event"], "test.event")
        self.assertEqual(record["who"], "world")

    def test_level_filter(self) -> None:
        """Events below the configured level are dropped."""
        stream = io.StringIO()
        observer = make_observer("text", "warn", stream)
        Logger(observer=observer).info("quiet")
        Logger(observer=observer).warn("loud")
        self.assertNotIn("quiet", stream.getvalue())
        self.assertIn("loud", stream.getvalue())

    def test_journal_encoding(self) -> None:
        """Multi-line values use journald's length-prefixed binary form."""
        self.assertEqual(encode_journal({"A": "x", "B": "1\n2"}), b"A=x\nB\n" + (3).to_bytes(8, "little") + b"1\n2\n")

    def test_root_service_installs_observer(self) -> None:
        """With [log] format = json the root service gives twistd's application a JSON observer."""
        from twisted.internet import reactor

        from mailgw import assemble

        config = load_config_text('config_version = 1\n[server]\nstate_dir = "%s"\n[log]\nformat = "json"\n' % self.mktemp())
        root = assemble.build(config, reactor)
        application = Application("mailgw")
        root.setServiceParent(application)
        self.assertIsNotNone(application.getComponent(ILogObserver, None))
