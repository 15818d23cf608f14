"""Command sequences real clients send (Thunderbird, Outlook, Outlook Express), answered completely."""

from __future__ import annotations

from twisted.trial import unittest

from tests.imap.imap_testing import MESSAGE, Harness


def run(lines: list[bytes]) -> list[bytes]:
    h = Harness()
    h.account().append("INBOX", MESSAGE)
    c = h.connect()
    return [c.send(line + b"\r\n") for line in lines]


class DialogueTests(unittest.SynchronousTestCase):
    """Every command of each dialogue ends with its own tagged OK."""

    def _check(self, lines: list[bytes]) -> list[bytes]:
        outs = run(lines)
        for line, out in zip(lines, outs):
            tag = line.split(b" ", 1)[0]
            self.assertTrue(out.rstrip(b"\r\n").split(b"\r\n")[-1].startswith(tag + b" OK"), (line, out))
        return outs

    def test_thunderbird(self) -> None:
        """Thunderbird's start-up: ID, NAMESPACE, LIST (SUBSCRIBED) ... RETURN (SPECIAL-USE), header fetch, IDLE."""
        outs = self._check([
            b"1 authenticate PLAIN AGFsaWNlAFMzY3JldCFwdw==", b'2 ID ("name" "Thunderbird" "version" "115.0")',
            b"3 namespace", b'4 list (subscribed) "" "*" return (special-use)', b'5 lsub "" "*"',
            b'6 select "INBOX"', b"7 UID fetch 1:* (FLAGS)",
            b"8 UID fetch 1 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID "
            b"Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])",
            b"9 UID fetch 1 (UID RFC822.SIZE BODY.PEEK[])", b'10 STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)'])
        self.assertIn(b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent\r\n', outs[3])
        self.assertIn(b"Subject: Hello\r\n", outs[7])
        self.assertIn(b"* 1 FETCH (UID 1 RFC822.SIZE 176 BODY[] {176}\r\n", outs[8])

    def test_outlook(self) -> None:
        """Outlook: LIST/LSUB, SELECT, FETCH 1:* (UID FLAGS), header fetch, UID STORE, body fetch, EXPUNGE."""
        outs = self._check([
            b"a1 LOGIN alice S3cret!pw", b'a2 LIST "" "*"', b'a3 LSUB "" "*"', b'a4 SELECT "INBOX"',
            b"a5 FETCH 1:* (UID FLAGS)", b"a6 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
            b"a7 UID STORE 1 +FLAGS (\\Seen)", b"a8 UID FETCH 1 (BODY.PEEK[])", b"a9 UID STORE 1 +FLAGS (\\Deleted)",
            b"a10 EXPUNGE", b"a11 LOGOUT"])
        self.assertEqual(outs[9], b"* 1 EXPUNGE\r\na10 OK Expunge completed.\r\n")

    def test_outlook_express(self) -> None:
        """Outlook Express lists with BODY.PEEK[HEADER] and reads the body on click with BODY[]."""
        outs = self._check([
            b"b1 LOGIN alice S3cret!pw", b'b2 SELECT "INBOX"',
            b"b3 FETCH 1:* (BODY.PEEK[HEADER] RFC822.SIZE UID FLAGS INTERNALDATE)", b"b4 UID FETCH 1 (BODY[])"])
        self.assertIn(b"FLAGS (\\Seen \\Recent)", outs[3])
