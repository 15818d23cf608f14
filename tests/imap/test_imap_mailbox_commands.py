"""Transcripts of the authenticated-state commands: SELECT/EXAMINE, folders, LIST/LSUB, STATUS, APPEND."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.trial import unittest

from tests.imap.imap_testing import MESSAGE, Harness


def logged_in(h: Harness | None = None) -> tuple[Harness, object]:
    h = h or Harness()
    c = h.connect()
    c.login()
    return h, c


class SelectTests(unittest.SynchronousTestCase):
    """SELECT and EXAMINE return every untagged datum RFC 3501 §6.3.1 requires."""

    def test_select(self) -> None:
        """SELECT returns FLAGS, PERMANENTFLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT and READ-WRITE."""
        h, c = logged_in()
        acct = h.account()
        acct.append("INBOX", MESSAGE, frozenset({"\\Seen"}))
        acct.append("INBOX", MESSAGE, frozenset({"$Work"}))
        v = acct.folder("INBOX").uid_validity
        self.assertEqual(c.send(b"s SELECT inbox\r\n"), (
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n"
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted.\r\n"
            b"* 2 EXISTS\r\n* 2 RECENT\r\n* OK [UNSEEN 2] First unseen.\r\n"
            b"* OK [UIDVALIDITY %d] UIDs valid\r\n* OK [UIDNEXT 3] Predicted next UID\r\n"
            b"s OK [READ-WRITE] Select completed.\r\n" % v))

    def test_examine_is_read_only(self) -> None:
        """EXAMINE answers READ-ONLY with empty PERMANENTFLAGS, refuses STORE/EXPUNGE, and sets no \\Seen."""
        h, c = logged_in()
        h.account().append("INBOX", MESSAGE)
        out = c.send(b"e EXAMINE INBOX\r\n")
        self.assertIn(b"* OK [PERMANENTFLAGS ()] Flags permitted.\r\n", out)
        self.assertTrue(out.endswith(b"e OK [READ-ONLY] Examine completed.\r\n"))
        self.assertEqual(c.send(b"a STORE 1 +FLAGS (\\Seen)\r\n"), b"a NO [READ-ONLY] Mailbox is read-only\r\n")
        self.assertEqual(c.send(b"b EXPUNGE\r\n"), b"b NO [READ-ONLY] Mailbox is read-only\r\n")
        c.send(b"f FETCH 1 BODY[TEXT]\r\n")
        self.assertEqual(c.send(b"g FETCH 1 FLAGS\r\n"), b"* 1 FETCH (FLAGS (\\Recent))\r\ng OK Fetch completed.\r\n")

    def test_select_missing(self) -> None:
        """A failed SELECT leaves no mailbox selected."""
        _, c = logged_in()
        c.send(b"a SELECT INBOX\r\n")
        self.assertEqual(c.send(b"b SELECT Nope\r\n"), b"b NO [NONEXISTENT] Mailbox doesn't exist\r\n")
        self.assertEqual(c.send(b"c FETCH 1 FLAGS\r\n"), b"c BAD No mailbox selected.\r\n")


class FolderTests(unittest.SynchronousTestCase):
    """CREATE, DELETE, RENAME, SUBSCRIBE, and name validation."""

    def test_create_delete_rename(self) -> None:
        """Folders are created, renamed (with children) and deleted."""
        h, c = logged_in()
        self.assertEqual(c.send(b"a CREATE Work/2026\r\n"), b"a OK Create completed.\r\n")
        self.assertEqual(c.send(b"b CREATE Work\r\n"), b"b NO [ALREADYEXISTS] Mailbox already exists\r\n")
        self.assertEqual(c.send(b"c RENAME Work Projects\r\n"), b"c OK Rename completed.\r\n")
        self.assertEqual(c.send(b'd LIST "" "Projects*"\r\n'),
                         b'* LIST (\\HasChildren) "/" Projects\r\n* LIST (\\HasNoChildren) "/" Projects/2026\r\n'
                         b"d OK List completed.\r\n")
        self.assertEqual(c.send(b"e DELETE Projects/2026\r\n"), b"e OK Delete completed.\r\n")
        self.assertEqual(c.send(b"f DELETE INBOX\r\n"), b"f NO [CANNOT] INBOX can't be deleted.\r\n")
        self.assertEqual(c.send(b"g CREATE INBOX\r\n"), b"g NO [ALREADYEXISTS] Mailbox already exists\r\n")

    def test_rename_inbox_moves_messages(self) -> None:
        """RENAME INBOX moves its messages to the new folder and leaves INBOX empty (RFC 3501 §6.3.5)."""
        h, c = logged_in()
        h.account().append("INBOX", MESSAGE)
        self.assertEqual(c.send(b"a RENAME INBOX Old\r\n"), b"a OK Rename completed.\r\n")
        self.assertEqual(c.send(b"b STATUS INBOX (MESSAGES)\r\nc STATUS Old (MESSAGES)\r\n"),
                         b"* STATUS INBOX (MESSAGES 0)\r\nb OK Status completed.\r\n"
                         b"* STATUS Old (MESSAGES 1)\r\nc OK Status completed.\r\n")

    def test_bad_names(self) -> None:
        """'..', invalid mUTF-7 and raw 8-bit names are refused with NO and a clear text."""
        _, c = logged_in()
        self.assertEqual(c.send(b"a CREATE ../etc\r\n"), b"a NO [CANNOT] Invalid mailbox name: Contains '..'\r\n")
        self.assertEqual(c.send(b"b CREATE a/../../b\r\n"), b"b NO [CANNOT] Invalid mailbox name: Contains '..'\r\n")
        self.assertEqual(c.send(b"c CREATE &Jjo!\r\n"), b"c NO Mailbox name is not valid mUTF-7\r\n")
        self.assertEqual(c.send(b'd CREATE "caf\xc3\xa9"\r\n'), b"d NO Mailbox name is not valid mUTF-7\r\n")
        self.assertEqual(c.send(b"e CREATE &AGE-&AGI-\r\n"), b"e NO Mailbox name is not valid mUTF-7\r\n")
        self.assertEqual(c.send(b"f CREATE /etc\r\n"),
                         b"f NO [CANNOT] Invalid mailbox name: Begins with hierarchy separator\r\n")
        self.assertEqual(c.send(b"g CREATE a//b\r\n"),
                         b"g NO [CANNOT] Invalid mailbox name: Has adjacent hierarchy separators\r\n")
        self.assertEqual(c.send(b"h CREATE {3}\r\n"), b"+ Ready for literal data\r\n")
        self.assertEqual(c.send(b"a\x00b\r\n"), b"h BAD NULs not allowed in strings\r\n")
        self.assertEqual(c.send(b"i CREATE ~root\r\n"), b"i NO [CANNOT] Invalid mailbox name: Begins with '~'\r\n")
        self.assertTrue(c.send(b"j CREATE a/cur\r\n").startswith(b"j NO [CANNOT] Invalid mailbox name"))

    def test_mutf7_names(self) -> None:
        """Non-ASCII names travel as modified UTF-7 in both directions."""
        h, c = logged_in()
        self.assertEqual(c.send(b"a CREATE &AMk-t&AOk-\r\n"), b"a OK Create completed.\r\n")
        self.assertIn("Été", self._names(h))
        self.assertEqual(c.send(b'b LIST "" "&AMk-*"\r\n'),
                         b'* LIST (\\HasNoChildren) "/" &AMk-t&AOk-\r\nb OK List completed.\r\n')

    def _names(self, h: Harness) -> list[str]:
        return [f.name for f in self.successResultOf(h.account().list_folders())]

    def test_subscriptions(self) -> None:
        """SUBSCRIBE/UNSUBSCRIBE drive LSUB and LIST (SUBSCRIBED)."""
        _, c = logged_in()
        c.send(b"a CREATE Lists\r\n")
        self.assertEqual(c.send(b"b SUBSCRIBE Lists\r\n"), b"b OK Subscribe completed.\r\n")
        self.assertEqual(c.send(b'c LSUB "" "L*"\r\n'), b'* LSUB () "/" Lists\r\nc OK Lsub completed.\r\n')
        self.assertEqual(c.send(b'd LIST (SUBSCRIBED) "" "L*"\r\n'),
                         b'* LIST (\\HasNoChildren \\Subscribed) "/" Lists\r\nd OK List completed.\r\n')
        self.assertEqual(c.send(b"e UNSUBSCRIBE Lists\r\n"), b"e OK Unsubscribe completed.\r\n")
        self.assertEqual(c.send(b'f LSUB "" "L*"\r\n'), b"f OK Lsub completed.\r\n")


class ListTests(unittest.SynchronousTestCase):
    """LIST with '*', '%', special-use and the delimiter query."""

    def test_delimiter(self) -> None:
        """LIST "" "" returns the hierarchy delimiter."""
        _, c = logged_in()
        self.assertEqual(c.send(b'a LIST "" ""\r\n'), b'* LIST (\\Noselect) "/" ""\r\na OK List completed.\r\n')

    def test_percent_and_star(self) -> None:
        """'%' stops at the separator, '*' does not."""
        _, c = logged_in()
        c.send(b"a CREATE A/B/C\r\n")
        self.assertEqual(c.send(b'b LIST "" "A/%"\r\n'), b'* LIST (\\HasChildren) "/" A/B\r\nb OK List completed.\r\n')
        self.assertEqual(c.send(b'c LIST "A/" "*"\r\n'),
                         b'* LIST (\\HasChildren) "/" A/B\r\n* LIST (\\HasNoChildren) "/" A/B/C\r\n'
                         b"c OK List completed.\r\n")

    def test_special_use(self) -> None:
        """LIST (SPECIAL-USE) returns only the role folders, with their attributes."""
        _, c = logged_in()
        self.assertEqual(c.send(b'a LIST (SPECIAL-USE) "" "*"\r\n'),
                         b'* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n'
                         b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n'
                         b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n'
                         b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
                         b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\na OK List completed.\r\n')

    def test_namespace(self) -> None:
        """NAMESPACE: one personal namespace with '/'."""
        _, c = logged_in()
        self.assertEqual(c.send(b"a NAMESPACE\r\n"), b'* NAMESPACE (("" "/")) NIL NIL\r\na OK Namespace completed.\r\n')


class StatusAppendTests(unittest.SynchronousTestCase):
    """STATUS and APPEND (UIDPLUS, TRYCREATE, APPENDLIMIT)."""

    def test_status(self) -> None:
        """STATUS returns the requested items in order."""
        h, c = logged_in()
        h.account().append("Sent", MESSAGE)
        v = h.account().folder("Sent").uid_validity
        self.assertEqual(c.send(b"a STATUS Sent (UIDNEXT MESSAGES UNSEEN RECENT UIDVALIDITY)\r\n"),
                         b"* STATUS Sent (UIDNEXT 2 MESSAGES 1 UNSEEN 1 RECENT 1 UIDVALIDITY %d)\r\n"
                         b"a OK Status completed.\r\n" % v)
        self.assertEqual(c.send(b"b STATUS Sent (BOGUS)\r\n"), b"b BAD Invalid STATUS item\r\n")
        self.assertEqual(c.send(b"c STATUS Nope (MESSAGES)\r\n"), b"c NO [NONEXISTENT] Mailbox doesn't exist\r\n")

    def test_append_forms(self) -> None:
        """APPEND without flags, with flags, with flags and date; APPENDUID in each answer."""
        h, c = logged_in()
        v = h.account().folder("INBOX").uid_validity
        n = len(MESSAGE)
        self.assertEqual(c.send(b"a APPEND INBOX {%d+}\r\n" % n + MESSAGE + b"\r\n"),
                         b"a OK [APPENDUID %d 1] Append completed.\r\n" % v)
        self.assertEqual(c.send(b"b APPEND INBOX (\\Seen \\Flagged) {%d+}\r\n" % n + MESSAGE + b"\r\n"),
                         b"b OK [APPENDUID %d 2] Append completed.\r\n" % v)
        self.assertEqual(c.send(b'c APPEND INBOX () " 2-Jan-2026 03:04:05 +0100" {%d}\r\n' % n),
                         b"+ Ready for literal data\r\n")
        self.assertEqual(c.send(MESSAGE + b"\r\n"), b"c OK [APPENDUID %d 3] Append completed.\r\n" % v)
        msgs = h.account().folder("INBOX").current()
        self.assertEqual(msgs[2].flags, frozenset({"\\Seen", "\\Flagged"}))
        self.assertEqual(msgs[3].internal_date, datetime(2026, 1, 2, 2, 4, 5, tzinfo=timezone.utc))

    def test_append_selected_reports_exists(self) -> None:
        """APPEND to the selected folder is followed by EXISTS before the tagged OK."""
        h, c = logged_in()
        c.send(b"s SELECT INBOX\r\n")
        out = c.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
        self.assertTrue(out.startswith(b"* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID"), out)

    def test_append_trycreate(self) -> None:
        """APPEND to a missing folder answers NO [TRYCREATE]."""
        _, c = logged_in()
        self.assertEqual(c.send(b"a APPEND Nope {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n"),
                         b"a NO [TRYCREATE] Mailbox doesn't exist: Nope\r\n")

    def test_append_too_big(self) -> None:
        """A literal over APPENDLIMIT gets NO [TOOBIG] without a continuation, and the session goes on."""
        _, c = logged_in()
        self.assertEqual(c.send(b"a APPEND INBOX {52428801}\r\n"),
                         b"a NO [TOOBIG] Literal too big (APPENDLIMIT 52428800)\r\n")
        self.assertEqual(c.send(b"b NOOP\r\n"), b"b OK NOOP completed.\r\n")

    def test_append_too_big_nonsync(self) -> None:
        """A non-synchronising literal over the limit is read and discarded, then refused with NO [TOOBIG]."""
        from mailgw.imap.config import IMAPLimits
        _, c = logged_in(Harness(limits=IMAPLimits(append_limit=10)))
        self.assertEqual(c.send(b"a APPEND INBOX {20+}\r\n" + b"x" * 20 + b"\r\nb NOOP\r\n"),
                         b"a NO [TOOBIG] Literal too big\r\nb OK NOOP completed.\r\n")

    def test_append_empty(self) -> None:
        """A zero-byte message is refused."""
        _, c = logged_in()
        self.assertEqual(c.send(b"a APPEND INBOX {0+}\r\n\r\n"), b"a NO Can't save a zero byte message.\r\n")


class LsubParentTests(unittest.SynchronousTestCase):
    """LSUB with '%' shows unsubscribed parents of subscribed names as \\Noselect."""

    def test_parent_noselect(self) -> None:
        """foo/bar subscribed, foo not: LSUB "" "%" lists foo with \\Noselect."""
        _, c = logged_in()
        c.send(b"a CREATE foo/bar\r\nb SUBSCRIBE foo/bar\r\nc UNSUBSCRIBE foo\r\n")
        self.assertEqual(c.send(b'd LSUB "" "f%"\r\n'), b'* LSUB (\\Noselect) "/" foo\r\nd OK Lsub completed.\r\n')
        self.assertEqual(c.send(b'e LSUB "" "foo/*"\r\n'), b'* LSUB () "/" foo/bar\r\ne OK Lsub completed.\r\n')


class PatternLimitTests(unittest.SynchronousTestCase):
    """LIST patterns are bounded so matching stays cheap."""

    def test_long_pattern(self) -> None:
        """A pattern with hundreds of wildcards is refused with NO [LIMIT]; a normal one still works."""
        _, c = logged_in()
        self.assertEqual(c.send(b'a LIST "" "' + b"%a" * 200 + b'"\r\n'), b"a NO [LIMIT] Mailbox pattern too long\r\n")
        self.assertTrue(c.send(b'b LIST "" "*"\r\n').endswith(b"b OK List completed.\r\n"))
