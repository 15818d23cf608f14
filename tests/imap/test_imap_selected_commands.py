"""Transcripts of the selected-state commands: FETCH, STORE, SEARCH, COPY/MOVE, EXPUNGE, CLOSE, IDLE, updates."""

from __future__ import annotations

from twisted.trial import unittest

from tests.imap.imap_testing import MESSAGE, Harness

MULTIPART = (
    b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.test>\r\n"
    b"To: a@example.test, B <b@example.test>\r\n"
    b"Subject: =?utf-8?b?UmVwb3J0IMOcYmVy?=\r\n"
    b"Date: Mon, 05 Jan 2026 08:00:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n"
    b"--b1\r\n"
    b'Content-Type: application/pdf; name="r.pdf"\r\n'
    b'Content-Disposition: attachment; filename="r.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0=\r\n"
    b"--b1--\r\n"
)


def selected(*messages: bytes, fast: bool = True) -> tuple[Harness, object]:
    h = Harness(fast=fast)
    for m in messages:
        h.account().append("INBOX", m)
    c = h.connect()
    c.select()
    return h, c


class FetchTests(unittest.SynchronousTestCase):
    """FETCH data items, byte for byte."""

    def test_fast_items(self) -> None:
        """UID, FLAGS, RFC822.SIZE, INTERNALDATE and ENVELOPE."""
        _, c = selected(MESSAGE)
        self.assertEqual(c.send(b"a FETCH 1 (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)\r\n"), (
            b'* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE %d INTERNALDATE "03-Dec-2025 10:00:00 +0000" '
            b'ENVELOPE ("Thu, 03 Dec 2026 10:00:00 +0000" "Hello" (("Alice" NIL "alice" "example.test")) '
            b'(("Alice" NIL "alice" "example.test")) (("Alice" NIL "alice" "example.test")) '
            b'(("Bob" NIL "bob" "example.test")) NIL NIL NIL "<m1@example.test>"))\r\n'
            b"a OK Fetch completed.\r\n" % len(MESSAGE)))

    def test_body_sets_seen_peek_does_not(self) -> None:
        """BODY.PEEK[] leaves \\Seen alone; BODY[TEXT] sets it and reports FLAGS."""
        _, c = selected(MESSAGE)
        body = MESSAGE.split(b"\r\n\r\n", 1)[1]
        self.assertEqual(c.send(b"a FETCH 1 BODY.PEEK[TEXT]\r\n"),
                         b"* 1 FETCH (BODY[TEXT] {%d}\r\n%s)\r\na OK Fetch completed.\r\n" % (len(body), body))
        self.assertEqual(c.send(b"b FETCH 1 BODY[TEXT]\r\n"),
                         b"* 1 FETCH (BODY[TEXT] {%d}\r\n%s FLAGS (\\Seen \\Recent))\r\nb OK Fetch completed.\r\n"
                         % (len(body), body))
        self.assertEqual(c.send(b"c FETCH 1 BODY[TEXT]\r\n"),
                         b"* 1 FETCH (BODY[TEXT] {%d}\r\n%s)\r\nc OK Fetch completed.\r\n" % (len(body), body))

    def test_partial(self) -> None:
        """BODY[]<origin.count> is truncated and labelled with the origin only; past the end it is empty."""
        _, c = selected(MESSAGE)
        self.assertEqual(c.send(b"a FETCH 1 BODY.PEEK[]<6.5>\r\n"),
                         b"* 1 FETCH (BODY[]<6> {5}\r\nAlice)\r\na OK Fetch completed.\r\n")
        self.assertEqual(c.send(b"b FETCH 1 BODY.PEEK[]<99999.5>\r\n"),
                         b"* 1 FETCH (BODY[]<99999> {0}\r\n)\r\nb OK Fetch completed.\r\n")

    def test_header_fields(self) -> None:
        """HEADER.FIELDS and HEADER.FIELDS.NOT pick raw lines and end with the blank line."""
        _, c = selected(MESSAGE)
        self.assertEqual(c.send(b"a FETCH 1 BODY.PEEK[HEADER.FIELDS (subject To)]\r\n"),
                         b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT TO)] {46}\r\n"
                         b"To: Bob <bob@example.test>\r\nSubject: Hello\r\n\r\n)\r\na OK Fetch completed.\r\n")
        out = c.send(b"b FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (From To Date Message-ID)])\r\n")
        self.assertEqual(out, b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (FROM TO DATE MESSAGE-ID)] {18}\r\n"
                              b"Subject: Hello\r\n\r\n)\r\nb OK Fetch completed.\r\n")

    def test_rfc822_items(self) -> None:
        """RFC822.HEADER and RFC822.TEXT; RFC822 sets \\Seen."""
        _, c = selected(MESSAGE)
        head, body = MESSAGE.split(b"\r\n\r\n", 1)
        self.assertEqual(c.send(b"a FETCH 1 (RFC822.HEADER)\r\n"),
                         b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s\r\n\r\n)\r\na OK Fetch completed.\r\n"
                         % (len(head) + 4, head))
        self.assertEqual(c.send(b"b FETCH 1 RFC822\r\n"),
                         b"* 1 FETCH (RFC822 {%d}\r\n%s FLAGS (\\Seen \\Recent))\r\nb OK Fetch completed.\r\n"
                         % (len(MESSAGE), MESSAGE))

    def test_multipart_structure_and_sections(self) -> None:
        """BODYSTRUCTURE, BODY, part sections and MIME headers of a multipart message."""
        _, c = selected(MULTIPART)
        out = c.send(b"a FETCH 1 (BODYSTRUCTURE)\r\n")
        self.assertEqual(out, (
            b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 29 1 NIL '
            b'NIL NIL NIL) ("application" "pdf" ("name" "r.pdf") NIL NIL "base64" 8 NIL ("attachment" '
            b'("filename" "r.pdf")) NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL))\r\na OK Fetch completed.\r\n'))
        self.assertEqual(c.send(b"b FETCH 1 (BODY)\r\n"), (
            b'* 1 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 29 1) '
            b'("application" "pdf" ("name" "r.pdf") NIL NIL "base64" 8) "mixed"))\r\nb OK Fetch completed.\r\n'))
        self.assertEqual(c.send(b"c FETCH 1 (BODY.PEEK[2] BODY.PEEK[1.MIME])\r\n"), (
            b"* 1 FETCH (BODY[2] {8}\r\nJVBERi0= BODY[1.MIME] {88}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n)\r\nc OK Fetch completed.\r\n"))
        self.assertEqual(c.send(b"d FETCH 1 BODY.PEEK[3]\r\n"), b"* 1 FETCH (BODY[3] NIL)\r\nd OK Fetch completed.\r\n")

    def test_eight_bit_and_malformed_headers(self) -> None:
        """8-bit, unterminated and garbage headers never break the session: ENVELOPE sends literals."""
        broken = (b"Subject: caf\xc3\xa9 \xff\r\nFrom: \"unterminated <x@\r\nTo: ,,,@,<>\r\n"
                  b"Content-Type: multipart/mixed; boundary=\r\n: nothing\r\n\x00\x01garbage line\r\n")
        _, c = selected(broken, MESSAGE)
        out = c.send(b"a FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[1] RFC822.SIZE)\r\n")
        self.assertIn(b"{7}\r\ncaf\xc3\xa9 \xff", out)
        self.assertTrue(out.endswith(b"a OK Fetch completed.\r\n"))
        self.assertIn(b"* 2 FETCH", out)
        self.assertEqual(c.send(b"b SEARCH SUBJECT caf\xc3\xa9\r\n"), b"* SEARCH 1\r\nb OK Search completed.\r\n")

    def test_fast_retrieval_reads_only_headers(self) -> None:
        """With fast_message_retrieval, header-first fetches never open the message file."""
        h, c = selected(MESSAGE)
        backend = h.account().folder("INBOX")
        opened: list[int] = []
        original = backend.open_bodies
        backend.open_bodies = lambda uids: (opened.extend(uids), original(uids))[1]  # type: ignore[method-assign]
        out = c.send(b"a FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODY.PEEK[HEADER] INTERNALDATE)\r\n")
        self.assertTrue(out.endswith(b"a OK Fetch completed.\r\n"))
        self.assertEqual(opened, [])
        c.send(b"b FETCH 1 BODY.PEEK[TEXT]\r\n")
        self.assertEqual(opened, [1])

    def test_slow_retrieval_reads_files(self) -> None:
        """Without fast_message_retrieval, RFC822.SIZE and ENVELOPE are computed from the file."""
        h, c = selected(MESSAGE, fast=False)
        backend = h.account().folder("INBOX")
        opened: list[int] = []
        original = backend.open_bodies
        backend.open_bodies = lambda uids: (opened.extend(uids), original(uids))[1]  # type: ignore[method-assign]
        self.assertEqual(c.send(b"a FETCH 1 (RFC822.SIZE)\r\n"),
                         b"* 1 FETCH (RFC822.SIZE %d)\r\na OK Fetch completed.\r\n" % len(MESSAGE))
        self.assertEqual(opened, [1])

    def test_uid_fetch_and_sets(self) -> None:
        """UID FETCH adds UID; huge ranges are clamped; invalid sets are BAD."""
        _, c = selected(MESSAGE, MESSAGE, MESSAGE)
        self.assertEqual(c.send(b"a UID FETCH 2:4294967295 FLAGS\r\n"),
                         b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n"
                         b"a OK Fetch completed.\r\n")
        self.assertEqual(c.send(b"b FETCH 3:1,1:* (UID)\r\n"),
                         b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nb OK Fetch completed.\r\n")
        self.assertEqual(c.send(b"c FETCH 0 FLAGS\r\n"), b"c BAD Error in IMAP command FETCH: Invalid messageset\r\n")
        self.assertEqual(c.send(b"d UID FETCH 4294967296 FLAGS\r\n"), b"d BAD Error in IMAP command UID FETCH: Invalid uidset\r\n")
        self.assertEqual(c.send(b"e FETCH 1 (FLAGS BOGUS)\r\n"),
                         b"e BAD Error in IMAP command FETCH: Unknown parameter BOGUS\r\n")
        self.assertEqual(c.send(b"f FETCH 1 FAST\r\n")[:40], b"* 1 FETCH (FLAGS (\\Recent) INTERNALDATE ")


class StoreTests(unittest.SynchronousTestCase):
    """STORE and UID STORE with .SILENT."""

    def test_store_modes(self) -> None:
        """+FLAGS, -FLAGS, FLAGS and .SILENT."""
        _, c = selected(MESSAGE, MESSAGE)
        self.assertEqual(c.send(b"a STORE 1:2 +FLAGS (\\Seen $Work)\r\n"), flags_update(b"$Work") +
                         b"* 1 FETCH (FLAGS (\\Seen \\Recent $Work))\r\n* 2 FETCH (FLAGS (\\Seen \\Recent $Work))\r\n"
                         b"a OK Store completed.\r\n")
        self.assertEqual(c.send(b"b STORE 1 -FLAGS.SILENT (\\Seen)\r\n"), b"b OK Store completed.\r\n")
        self.assertEqual(c.send(b"c UID STORE 2 FLAGS \\Flagged\r\n"),
                         b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2)\r\nc OK Store completed.\r\n")
        self.assertEqual(c.send(b"d STORE 1 +FLAGS (\\Bogus)\r\n"), b"d BAD Invalid system flag \\Bogus\r\n")


def flags_update(*keywords: bytes, readonly: bool = False) -> bytes:
    """The untagged FLAGS and PERMANENTFLAGS a session gets when keywords appear (RFC 3501 §7.2.6)."""
    flags = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft" + b"".join(b" " + k for k in keywords)
    permanent = b"()" if readonly else b"(" + flags + b" \\*)"
    return b"* FLAGS (%s)\r\n* OK [PERMANENTFLAGS %s] Flags permitted.\r\n" % (flags, permanent)


class KeywordAnnouncementTests(unittest.SynchronousTestCase):
    """A new keyword is listed in FLAGS/PERMANENTFLAGS before any FETCH shows it, to every session (RFC 3501 §7.2.6)."""

    def test_store_announces_new_keyword_once(self) -> None:
        """STORE +FLAGS ($keyword1) sends FLAGS and PERMANENTFLAGS first; a known keyword does not repeat them."""
        _, c = selected(MESSAGE, MESSAGE)
        self.assertEqual(c.send(b"a STORE 1 +FLAGS ($keyword1)\r\n"), flags_update(b"$keyword1") +
                         b"* 1 FETCH (FLAGS (\\Recent $keyword1))\r\na OK Store completed.\r\n")
        self.assertEqual(c.send(b"b STORE 2 +FLAGS ($keyword1)\r\n"),
                         b"* 2 FETCH (FLAGS (\\Recent $keyword1))\r\nb OK Store completed.\r\n")
        self.assertEqual(c.send(b"c STORE 2 +FLAGS.SILENT ($keyword2)\r\n"),
                         flags_update(b"$keyword1", b"$keyword2") + b"c OK Store completed.\r\n")

    def test_other_sessions_get_it_with_their_updates(self) -> None:
        """Another session gets FLAGS/PERMANENTFLAGS before the FETCH at NOOP; a read-only one PERMANENTFLAGS ()."""
        h, a = selected(MESSAGE)
        ro = h.connect()
        ro.login()
        ro.send(b"e EXAMINE INBOX\r\n")
        b = h.connect()
        b.select()
        b.send(b"x STORE 1 +FLAGS.SILENT ($Label1)\r\n")
        self.assertEqual(a.send(b"n NOOP\r\n"), flags_update(b"$Label1") +
                         b"* 1 FETCH (UID 1 FLAGS (\\Recent $Label1))\r\nn OK NOOP completed.\r\n")
        self.assertEqual(ro.send(b"n NOOP\r\n"), flags_update(b"$Label1", readonly=True) +
                         b"* 1 FETCH (UID 1 FLAGS ($Label1))\r\nn OK NOOP completed.\r\n")

    def test_store_and_fetch_before_the_update_point(self) -> None:
        """A STORE or a \\Seen-setting FETCH that shows another session's new keyword before NOOP is preceded by FLAGS."""
        h, a = selected(MESSAGE, MESSAGE)
        b = h.connect()
        b.select()
        b.send(b"x STORE 1:2 +FLAGS.SILENT ($Todo)\r\n")
        self.assertEqual(a.send(b"s STORE 1 +FLAGS (\\Flagged)\r\n"), flags_update(b"$Todo") +
                         b"* 1 FETCH (FLAGS (\\Flagged \\Recent $Todo))\r\ns OK Store completed.\r\n")
        b.send(b"y STORE 2 +FLAGS.SILENT ($Later)\r\n")
        self.assertEqual(a.send(b"f FETCH 2 (FLAGS BODY[TEXT]<0.2>)\r\n"), flags_update(b"$Later", b"$Todo") +
                         b"* 2 FETCH (FLAGS (\\Seen \\Recent $Later $Todo) BODY[TEXT]<0> {2}\r\nHi)\r\n"
                         b"f OK Fetch completed.\r\n")

    def test_idle_push(self) -> None:
        """During IDLE the FLAGS/PERMANENTFLAGS come pushed right before the FETCH."""
        h, a = selected(MESSAGE)
        b = h.connect()
        b.select()
        self.assertEqual(a.send(b"i IDLE\r\n"), b"+ idling\r\n")
        b.send(b"x STORE 1 +FLAGS.SILENT ($Junk)\r\n")
        self.assertEqual(a.read(), flags_update(b"$Junk") + b"* 1 FETCH (UID 1 FLAGS (\\Recent $Junk))\r\n")
        self.assertEqual(a.send(b"DONE\r\n"), b"i OK Idle completed.\r\n")

    def test_append_with_new_keyword(self) -> None:
        """APPEND (own session or another) of a message with a new keyword announces it with the EXISTS."""
        h, a = selected(MESSAGE)
        b = h.connect()
        b.select()
        out = a.send(b"a APPEND INBOX ($New) {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
        self.assertEqual(out, flags_update(b"$New") + b"* 2 EXISTS\r\n* 2 RECENT\r\n"
                         b"a OK [APPENDUID %d 2] Append completed.\r\n" % h.account().folder("INBOX").uid_validity)
        self.assertEqual(b.send(b"n NOOP\r\n"),
                         flags_update(b"$New") + b"* 2 EXISTS\r\n* 0 RECENT\r\nn OK NOOP completed.\r\n")

    def test_nil_is_not_a_keyword(self) -> None:
        """NIL in a STORE or APPEND flag list is BAD and nothing is stored."""
        h, c = selected(MESSAGE)
        self.assertEqual(c.send(b"a STORE 1 +FLAGS (NIL)\r\n"), b"a BAD Invalid flag NIL\r\n")
        self.assertEqual(c.send(b"b STORE 1 FLAGS nil\r\n"), b"b BAD Invalid flag nil\r\n")
        self.assertEqual(c.send(b"c APPEND INBOX (\\Seen NIL) {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n"),
                         b"c BAD Invalid flag NIL\r\n")
        self.assertEqual(c.send(b"d FETCH 1:* FLAGS\r\n"), b"* 1 FETCH (FLAGS (\\Recent))\r\nd OK Fetch completed.\r\n")


class SearchTests(unittest.SynchronousTestCase):
    """SEARCH keys, charsets, nesting."""

    def setUp(self) -> None:
        self.h, self.c = selected(MESSAGE, MULTIPART)
        self.c.send(b"x STORE 1 +FLAGS.SILENT (\\Seen)\r\n")

    def search(self, criteria: bytes) -> bytes:
        return self.c.send(b"a SEARCH " + criteria + b"\r\n")  # type: ignore[attr-defined]

    def test_keys(self) -> None:
        """Flags, headers (RFC 2047-decoded), bodies (QP-decoded), sizes, dates, sets, OR/NOT."""
        cases = {
            b"ALL": b"1 2", b"SEEN": b"1", b"UNSEEN": b"2", b"NEW": b"2", b"RECENT": b"1 2", b"OLD": b"",
            b"SUBJECT hello": b"1", b"SUBJECT \xc3\xbcber": b"2", b"FROM j\xc3\xb6rg": b"2", b"TO bob": b"1",
            b"CC nobody": b"", b"BODY k\xc3\xb6ln": b"2", b"TEXT alice": b"1", b'HEADER Message-ID "m1@"': b"1",
            b'HEADER Message-ID ""': b"1", b"LARGER 300": b"2", b"SMALLER 300": b"1",
            b"SENTBEFORE 4-Dec-2026": b"1 2", b"SENTON 5-Jan-2026": b"2", b"SENTSINCE 1-Feb-2026": b"1",
            b"ON 3-Dec-2025": b"1 2", b"BEFORE 3-Dec-2025": b"", b"SINCE 1-Jan-2025": b"1 2",
            b"UID 2": b"2", b"2:*": b"2", b"*": b"2", b"OR SEEN LARGER 300": b"1 2", b"NOT (SEEN)": b"2",
            b"KEYWORD $Work": b"", b"UNKEYWORD $Work": b"1 2", b"NOT NOT NOT SEEN": b"2",
            b"CHARSET UTF-8 SUBJECT {5}\r\n\xc3\xbcber": b"2", b"CHARSET US-ASCII DELETED": b"",
        }
        for criteria, expected in cases.items():
            out = self.search(criteria) if b"{" not in criteria else self._literal(criteria)
            want = b"* SEARCH" + (b" " + expected if expected else b"") + b"\r\na OK Search completed.\r\n"
            self.assertEqual(out, want, criteria)

    def _literal(self, criteria: bytes) -> bytes:
        head, tail = criteria.split(b"\r\n")
        self.c.send(b"a SEARCH " + head + b"\r\n")  # type: ignore[attr-defined]
        return self.c.send(tail + b"\r\n")  # type: ignore[attr-defined]

    def test_uid_search(self) -> None:
        """UID SEARCH answers UIDs."""
        self.assertEqual(self.c.send(b"a UID SEARCH UNSEEN\r\n"),  # type: ignore[attr-defined]
                         b"* SEARCH 2\r\na OK Search completed.\r\n")

    def test_bad_charset_and_syntax(self) -> None:
        """An unknown charset is NO [BADCHARSET]; nesting past the cap is BAD Too deep nesting."""
        self.assertEqual(self.search(b"CHARSET KOI8-R ALL"),
                         b"a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n")
        self.assertEqual(self.search(b"(" * 100 + b"ALL" + b")" * 100), b"a BAD Too deep nesting\r\n")
        self.assertEqual(self.search(b"NOT " * 100 + b"ALL"), b"a BAD Too deep nesting\r\n")
        self.assertEqual(self.search(b"BOGUS"), b"a BAD Error in IMAP command SEARCH: Unknown argument BOGUS\r\n")
        self.assertEqual(self.search(b"BEFORE 32-Foo-2026"), b"a BAD Error in IMAP command SEARCH: Invalid date\r\n")


# The address fixture of Dovecot's imaptest (search-addresses.mbox), one message per entry
ADDRESS_MESSAGES = (
    b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\nCc: user-cc@domain.org\r\n"
    b"Bcc: user-bcc@domain.org\r\n\r\nbody\r\n",
    b"From: RealFrom <user-from@domain.org>\r\nTo: RealTo <user-to@domain.org>\r\n"
    b"Cc: RealCc <user-cc@domain.org>\r\nBcc: RealBcc <user-bcc@domain.org>\r\n\r\nbody2\r\n",
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\n"
    b"Cc: <user-cc@domain.org>\r\nBcc: <user-bcc@domain.org>\r\n\r\nbody3\r\n",
    b"From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\n"
    b"Cc: user-cc@domain.org (RealCc)\r\nBcc: user-bcc@domain.org (RealBcc)\r\n\r\nbody4\r\n",
    b"From: user-from1@domain.org, user-from2@domain.org\r\nCc: user-cc@domain.org\r\n\r\nbody5\r\n",
    b"To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n"
    b"  groupname2: groupuser3@domain.org;\r\n\r\nbody5\r\n",
    b"From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <Joerg.Mueller@Example.TEST>\r\n"
    b"To: \"Dr. Who\" <who@tardis.example>\r\n\r\nbody7\r\n",
)


class AddressSearchTests(unittest.SynchronousTestCase):
    """FROM/TO/CC/BCC match the field's full text: display name and address, decoded, any case, substring."""

    def test_imaptest_search_addresses(self) -> None:
        """The cases of Dovecot's imaptest search-addresses script, plus RFC 2047 names and mixed case."""
        _, c = selected(*ADDRESS_MESSAGES)
        cases = {
            b"from user-from@domain.org": b"1 2 3 4", b"to user-to@domain.org": b"1 2 3 4",
            b"cc user-cc@domain.org": b"1 2 3 4 5", b"bcc user-bcc@domain.org": b"1 2 3 4",
            b"from realfrom": b"2 4", b"to realto": b"2 4", b"cc realcc": b"2 4", b"bcc realbcc": b"2 4",
            b'header from ""': b"1 2 3 4 5 7", b'header to ""': b"1 2 3 4 6 7", b'header cc ""': b"1 2 3 4 5",
            b'header bcc ""': b"1 2 3 4",
            b"from ser-fro": b"1 2 3 4 5", b"to ser-t": b"1 2 3 4", b"cc ser-c": b"1 2 3 4 5",
            b"bcc ser-bc": b"1 2 3 4",
            b"from ealfro": b"2 4", b"to ealt": b"2 4", b"cc ealc": b"2 4", b"bcc ealbc": b"2 4",
            b"from user-from1": b"5", b"from user-from2": b"5",
            b"to groupname": b"6", b"to groupname2": b"6", b"to groupuser1": b"6", b"to groupuser2": b"6",
            b"to groupuser3": b"6", b"to groupuser4": b"",
            # RFC 2047 display name decoded; case-insensitive on name and address; name and address together
            b"from \"j\xc3\xb6rg m\xc3\xbcller\"": b"7", b"from joerg.mueller@example.test": b"7",
            b"from \"m\xc3\xbcller <joerg\"": b"7", b"to \"dr. who <who@\"": b"7",
        }
        for criteria, expected in cases.items():
            want = b"* SEARCH" + (b" " + expected if expected else b"") + b"\r\na OK Search completed.\r\n"
            self.assertEqual(c.send(b"a SEARCH " + criteria + b"\r\n"), want, criteria)


class CopyMoveExpungeTests(unittest.SynchronousTestCase):
    """COPY, MOVE (COPYUID), EXPUNGE, UID EXPUNGE, CLOSE, UNSELECT."""

    def test_copy(self) -> None:
        """COPY answers COPYUID; a missing target is NO [TRYCREATE]."""
        h, c = selected(MESSAGE, MESSAGE)
        v = h.account().folder("Archive").uid_validity
        self.assertEqual(c.send(b"a COPY 1:2 Archive\r\n"), b"a OK [COPYUID %d 1:2 1:2] Copy completed.\r\n" % v)
        self.assertEqual(c.send(b"b UID COPY 2 Nope\r\n"), b"b NO [TRYCREATE] Mailbox doesn't exist\r\n")

    def test_move(self) -> None:
        """MOVE sends COPYUID untagged, then EXPUNGE for each source, then OK."""
        h, c = selected(MESSAGE, MESSAGE, MESSAGE)
        v = h.account().folder("Trash").uid_validity
        self.assertEqual(c.send(b"a UID MOVE 2:3 Trash\r\n"),
                         b"* OK [COPYUID %d 2:3 1:2] Moved UIDs.\r\n* 2 EXPUNGE\r\n* 2 EXPUNGE\r\n"
                         b"a OK Move completed.\r\n" % v)
        self.assertEqual(c.send(b"b FETCH * UID\r\n"), b"* 1 FETCH (UID 1)\r\nb OK Fetch completed.\r\n")

    def test_expunge_and_uid_expunge(self) -> None:
        """EXPUNGE removes every \\Deleted message; UID EXPUNGE only those in its set."""
        _, c = selected(MESSAGE, MESSAGE, MESSAGE, MESSAGE)
        c.send(b"a STORE 1:4 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertEqual(c.send(b"b UID EXPUNGE 2,4\r\n"), b"* 2 EXPUNGE\r\n* 3 EXPUNGE\r\nb OK Expunge completed.\r\n")
        self.assertEqual(c.send(b"c EXPUNGE\r\n"), b"* 1 EXPUNGE\r\n* 1 EXPUNGE\r\nc OK Expunge completed.\r\n")

    def test_close_expunges_silently(self) -> None:
        """CLOSE expunges without untagged responses; UNSELECT does not expunge."""
        h, c = selected(MESSAGE, MESSAGE)
        c.send(b"a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertEqual(c.send(b"b CLOSE\r\n"), b"b OK Close completed.\r\n")
        self.assertEqual(c.send(b"c STATUS INBOX (MESSAGES)\r\n"), b"* STATUS INBOX (MESSAGES 1)\r\nc OK Status completed.\r\n")
        c.send(b"d SELECT INBOX\r\ne STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertEqual(c.send(b"f UNSELECT\r\n"), b"f OK Unselect completed.\r\n")
        self.assertEqual(c.send(b"g STATUS INBOX (MESSAGES)\r\n"), b"* STATUS INBOX (MESSAGES 1)\r\ng OK Status completed.\r\n")


class SharedFolderTests(unittest.SynchronousTestCase):
    """Two sessions on one folder see each other's changes at the points RFC 3501 allows."""

    def test_no_expunge_during_fetch(self) -> None:
        """Another session's EXPUNGE is held back during FETCH/STORE/SEARCH and reported at NOOP."""
        h, a = selected(MESSAGE, MESSAGE)
        b = h.connect()
        b.select()
        b.send(b"x STORE 1 +FLAGS.SILENT (\\Deleted)\r\ny EXPUNGE\r\n")
        self.assertEqual(a.send(b"f FETCH 1:* (UID BODY.PEEK[TEXT]<0.2>)\r\n"),
                         b"* 2 FETCH (UID 2 BODY[TEXT]<0> {2}\r\nHi)\r\n"
                         b"f NO [EXPUNGEISSUED] Some messages were expunged or unreadable.\r\n")
        self.assertEqual(a.send(b"s SEARCH ALL\r\n"), b"* SEARCH 1 2\r\ns OK Search completed.\r\n")
        self.assertEqual(a.send(b"n NOOP\r\n"), b"* 1 EXPUNGE\r\nn OK NOOP completed.\r\n")

    def test_flags_and_exists_pushed(self) -> None:
        """Flag changes and new mail appear as FETCH and EXISTS at the next command that allows them."""
        h, a = selected(MESSAGE)
        b = h.connect()
        b.select()
        b.send(b"x STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")
        h.account().append("INBOX", MESSAGE)
        self.assertEqual(a.send(b"n NOOP\r\n"),
                         b"* 2 EXISTS\r\n* 2 RECENT\r\n* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\nn OK NOOP completed.\r\n")

    def test_idle_push(self) -> None:
        """During IDLE, EXISTS, EXPUNGE and FETCH are pushed at once; only DONE ends it."""
        h, a = selected(MESSAGE, MESSAGE)
        b = h.connect()
        b.select()
        self.assertEqual(a.send(b"i IDLE\r\n"), b"+ idling\r\n")
        h.account().append("INBOX", MESSAGE)
        self.assertEqual(a.read(), b"* 3 EXISTS\r\n* 3 RECENT\r\n")
        b.send(b"x STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertEqual(a.read(), b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))\r\n")
        b.send(b"y EXPUNGE\r\n")
        self.assertEqual(a.read(), b"* 1 EXPUNGE\r\n")
        self.assertEqual(a.send(b"j NOOP\r\n"), b"* BAD Expected DONE.\r\n")
        self.assertEqual(a.send(b"DONE\r\n"), b"i OK Idle completed.\r\n")

    def test_idle_keepalive_and_autologout(self) -> None:
        """IDLE sends '* OK Still here' periodically; 30 minutes without a new IDLE logs out."""
        h, a = selected()
        a.send(b"i IDLE\r\n")
        h.reactor.advance(120)
        self.assertEqual(a.read(), b"* OK Still here\r\n")
        h.reactor.advance(1800)
        self.assertIn(b"* BYE Disconnected for inactivity.\r\n", a.read())


class StreamingTests(unittest.SynchronousTestCase):
    """Whole messages over 1 MiB are copied from the file in 64 KiB chunks, pausing with the transport."""

    def test_big_body_streams_with_backpressure(self) -> None:
        """BODY[] of a 3 MiB message arrives intact, written in chunks only while the transport accepts data."""
        big = MESSAGE + b"".join(b"line %07d of a big message\r\n" % i for i in range(110000))
        h, c = selected(big, MESSAGE)
        transport = c.transport
        writes: list[int] = []
        original = transport.write

        def write(data: bytes) -> None:  # a transport whose buffer "fills" after 256 KiB
            writes.append(len(data))
            original(data)
            if len(transport.value()) > 256 * 1024 and transport.producer is not None:
                transport.producer.pauseProducing()

        transport.write = write  # type: ignore[method-assign]
        out = c.send(b"a FETCH 1:2 (UID BODY.PEEK[])\r\n")
        self.assertLess(len(out), 512 * 1024)
        rounds = 0
        while not out.endswith(b"a OK Fetch completed.\r\n"):
            rounds += 1
            self.assertLess(rounds, 100)
            c.proto.resumeProducing()
            out += c.read()
        self.assertGreater(rounds, 5)
        self.assertLessEqual(max(writes), 64 * 1024)
        self.assertEqual(out, b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(big) + big + b")\r\n"
                         b"* 2 FETCH (UID 2 BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE + b")\r\na OK Fetch completed.\r\n")


class UIDValidityChangeTests(unittest.SynchronousTestCase):
    """A store that renumbers under an open session ends the session instead of reusing void UIDs."""

    def test_bye_on_uidvalidity_change(self) -> None:
        """When a refresh shows a new UIDVALIDITY, the client gets BYE at the next update point."""
        h, c = selected(MESSAGE)
        h.account().folder("INBOX").uid_validity += 1  # what a rebuilt UID list does
        self.assertEqual(c.send(b"a NOOP\r\n"), b"* BYE Mailbox UIDVALIDITY changed\r\n")
        self.assertTrue(c.transport.disconnecting)


class BigPartialTests(unittest.SynchronousTestCase):
    """BODY[]<origin.count> of a big message reads only that range."""

    def test_partial_of_big_message(self) -> None:
        """The slice is exact at the start, in the middle and past the end."""
        big = MESSAGE + b"".join(b"row %07d\r\n" % i for i in range(200000))
        _, c = selected(big)
        self.assertEqual(c.send(b"a FETCH 1 BODY.PEEK[]<0.4>\r\n"),
                         b"* 1 FETCH (BODY[]<0> {4}\r\nFrom)\r\na OK Fetch completed.\r\n")
        mid = len(MESSAGE) + 13 * 1000
        self.assertEqual(c.send(b"b FETCH 1 BODY.PEEK[]<%d.13>\r\n" % mid),
                         b"* 1 FETCH (BODY[]<%d> {13}\r\nrow 0001000\r\n)\r\nb OK Fetch completed.\r\n" % mid)
        self.assertEqual(c.send(b"c FETCH 1 BODY.PEEK[]<%d.10>\r\n" % (len(big) + 5)),
                         b"* 1 FETCH (BODY[]<%d> {0}\r\n)\r\nc OK Fetch completed.\r\n" % (len(big) + 5))
