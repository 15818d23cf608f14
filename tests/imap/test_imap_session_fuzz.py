"""Random command sequences through a live session object: every command answered, never an internal error."""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests.imap.imap_testing import DEADLINE, MESSAGE, Harness, within

SETS = st.sampled_from([b"1", b"2:3", b"*", b"1:*", b"3,1", b"4294967295", b"2:*", b"5:2"])
BOXES = st.sampled_from([b"INBOX", b"Archive", b"Nope", b'"A/B"', b"&AOk-t&AOk-", b'"x y"', b"Trash"])
FLAGS = st.sampled_from([b"(\\Seen)", b"(\\Deleted \\Flagged)", b"($Work)", b"()", b"\\Answered"])
ITEMS = st.sampled_from([b"FLAGS", b"(UID ENVELOPE)", b"BODY[]", b"(BODY.PEEK[1.MIME] BODYSTRUCTURE)", b"FULL",
                         b"(BODY[HEADER.FIELDS (Subject)]<0.5> RFC822.SIZE)", b"(RFC822.TEXT INTERNALDATE)",
                         b"BODY.PEEK[2.1]", b"(BODY[TEXT]<3.4>)"])
KEYS = st.sampled_from([b"ALL", b"OR SEEN DELETED", b"NOT (FLAGGED 1:2)", b"SUBJECT hello", b"BODY test",
                        b"UID 2:*", b"LARGER 10 SMALLER 100000", b"SINCE 1-Jan-2020", b"TEXT alice NEW"])


@st.composite
def command(draw: st.DrawFn) -> bytes:
    uid = draw(st.sampled_from([b"", b"UID "]))
    return draw(st.sampled_from([
        b"FETCH %s %s" % (draw(SETS), draw(ITEMS)),
        b"STORE %s %sFLAGS%s %s" % (draw(SETS), draw(st.sampled_from([b"", b"+", b"-"])),
                                     draw(st.sampled_from([b"", b".SILENT"])), draw(FLAGS)),
        b"SEARCH %s" % draw(KEYS), b"COPY %s %s" % (draw(SETS), draw(BOXES)), b"MOVE %s %s" % (draw(SETS), draw(BOXES)),
        b"EXPUNGE", b"NOOP", b"CHECK", b"SELECT %s" % draw(BOXES), b"EXAMINE %s" % draw(BOXES), b"CLOSE",
        b"UNSELECT", b"CREATE %s" % draw(BOXES), b"DELETE %s" % draw(BOXES), b"RENAME %s %s" % (draw(BOXES), draw(BOXES)),
        b'LIST "" %s' % draw(st.sampled_from([b"*", b"%", b'"A/%"', b"INBOX"])), b'LSUB "" "*"',
        b"STATUS %s (MESSAGES UIDNEXT UNSEEN)" % draw(BOXES), b"APPEND %s {5+}\r\nhello" % draw(BOXES),
        b"SUBSCRIBE %s" % draw(BOXES),
    ])).replace(b"FETCH", uid + b"FETCH", 1)


def run_commands(case: unittest.SynchronousTestCase, h: Harness, commands: list[bytes]) -> None:
    """Two selected sessions; one runs `commands`, the other NOOPs in between (seeing the changes)."""
    for _ in range(3):
        h.account().append("INBOX", MESSAGE)
    other = h.connect()
    other.select()
    c = h.connect()
    c.select()
    for i, cmd in enumerate(commands):
        tag = b"t%d" % i
        out = c.send(tag + b" " + cmd + b"\r\n")
        noop = other.send(b"o%d NOOP\r\n" % i)
        case.assertNotIn(b"SERVERBUG", out, cmd)
        case.assertNotIn(b"SERVERBUG", noop, cmd)
        case.assertEqual(out.count(b"\r\n" + tag + b" ") + out.startswith(tag + b" "), 1, (cmd, out))
        case.assertFalse(c.transport.disconnecting, cmd)


class SessionFuzzTests(unittest.SynchronousTestCase):
    """The whole engine over the memory store, driven with random but plausible commands."""

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(command(), min_size=1, max_size=15))
    def test_every_command_answered(self, commands: list[bytes]) -> None:
        """Each command gets exactly one tagged reply and none is SERVERBUG; the connection stays open."""
        run_commands(self, Harness(), commands)


class MaildirSessionFuzzTests(unittest.SynchronousTestCase):
    """The same over the Maildir store (real files; its pool runs inline on the test reactor)."""

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(command(), min_size=1, max_size=15))
    def test_every_command_answered(self, commands: list[bytes]) -> None:
        """Each command gets exactly one tagged reply and none is SERVERBUG; the connection stays open."""
        with tempfile.TemporaryDirectory(prefix="mailgw-fuzz-") as root:
            run_commands(self, Harness(maildir=root), commands)


WIRE = st.sampled_from([b"a LOGIN alice x\r\n", b"b NOOP\r\n", b"{0+}\r\n", b"{5+}\r\nhello", b"{3}\r\n", b"abc",
                        b"x" * 3000, b"\r\n", b"\n", b"c SEARCH BODY x\r\n", b'd LIST "" (* % a*b)\r\n',
                        b"e FETCH 1:* (ENVELOPE BODYSTRUCTURE)\r\n", b"f IDLE\r\n", b"DONE\r\n", b"\x00\xff",
                        b"g APPEND INBOX {10+}\r\nCc: a) b\r\n", b"h SELECT INBOX\r\n", b"(", b")", b"*"])


class SessionBytesFuzzTests(unittest.SynchronousTestCase):
    """Arbitrary byte streams, before and after login: no internal error, bounded memory per connection."""

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.booleans(), st.lists(WIRE, max_size=40), st.integers(1, 64))
    def test_any_bytes(self, logged_in: bool, pieces: list[bytes], step: int) -> None:
        """Whatever arrives, in any chunking: no SERVERBUG, and the framer holds less than the documented bounds."""
        from mailgw.imap.config import IMAPLimits
        h = Harness()
        h.account().append("INBOX", MESSAGE)
        c = h.connect()
        if logged_in:
            c.select()
        data = b"".join(pieces)
        limits = IMAPLimits()
        bound = limits.max_line + limits.max_buffer + limits.command_lines_total + limits.command_literals_total
        if not logged_in:
            bound = limits.max_line + limits.max_buffer + limits.preauth_command

        def feed() -> bytes:
            out = b""
            for i in range(0, len(data), step):
                out += c.send(data[i : i + step])
                f = c.proto.framer
                self.assertLessEqual(f.buffered() + f.line_bytes() + f.literal_bytes(), bound + step)
            return out

        self.assertNotIn(b"SERVERBUG", within(DEADLINE, feed))
