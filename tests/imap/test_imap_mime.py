"""MIME sections, ENVELOPE and BODYSTRUCTURE on nested, 8-bit and hostile messages."""

from __future__ import annotations

import time

from twisted.trial import unittest

from mailgw.imap.envelope import addresses, bodystructure, envelope
from mailgw.imap.mime import parse_message, section_bytes
from mailgw.imap.wire.response import encode

NESTED = (
    b"Subject: outer\r\nContent-Type: multipart/mixed; boundary=\"A\"\r\n\r\n"
    b"preamble\r\n--A\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
    b"--A\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nFrom: x@y.test\r\nContent-Type: multipart/alternative; boundary=\"B\"\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\nplain inner\r\n--B\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--B--\r\n"
    b"\r\n--A--\r\nepilogue\r\n"
)


class SectionTests(unittest.SynchronousTestCase):
    """RFC 3501 §6.4.5 part numbering through multiparts and encapsulated messages."""

    def test_nested_sections(self) -> None:
        """2 is the whole inner message, 2.HEADER its header, 2.1/2.2 its alternative parts, 2.2.MIME a part header."""
        root = parse_message(NESTED)
        self.assertEqual(section_bytes(root, (1,), "", ()), b"first")
        inner = section_bytes(root, (2,), "", ())
        assert inner is not None
        self.assertTrue(inner.startswith(b"Subject: inner\r\n"))
        self.assertEqual(section_bytes(root, (2,), "HEADER.FIELDS", (b"subject",)), b"Subject: inner\r\n\r\n")
        self.assertEqual(section_bytes(root, (2, 1), "", ()), b"plain inner")
        self.assertEqual(section_bytes(root, (2, 2), "", ()), b"<p>html</p>")
        self.assertEqual(section_bytes(root, (2, 2), "MIME", ()), b"Content-Type: text/html\r\n\r\n")
        self.assertEqual(section_bytes(root, (1,), "HEADER", ()), b"")
        self.assertIsNone(section_bytes(root, (3,), "", ()))
        self.assertIsNone(section_bytes(root, (2, 3), "", ()))

    def test_single_part_numbering(self) -> None:
        """A non-multipart message has only part 1, its body."""
        root = parse_message(b"Subject: s\r\n\r\nbody\r\n")
        self.assertEqual(section_bytes(root, (1,), "", ()), b"body\r\n")
        self.assertIsNone(section_bytes(root, (2,), "", ()))
        self.assertEqual(section_bytes(root, (), "TEXT", ()), b"body\r\n")

    def test_nested_bodystructure(self) -> None:
        """message/rfc822 parts carry the inner ENVELOPE, BODYSTRUCTURE and line count."""
        out = encode(bodystructure(parse_message(NESTED)))
        self.assertIn(b'"message" "rfc822"', out)
        self.assertIn(b'(NIL "inner" (("" NIL "x" "y.test"))'.replace(b'""', b"NIL"), out)
        self.assertIn(b'"alternative" ("boundary" "B")', out)


class AddressTests(unittest.SynchronousTestCase):
    """RFC 5322 address lists into ENVELOPE form."""

    def test_forms(self) -> None:
        """Display names, comments, routes, groups and missing parts."""
        self.assertEqual(addresses(b'"Q, Public" <q@x.test> (comment), plain@y.test'),
                         [[b"Q, Public", None, b"q", b"x.test"], [None, None, b"plain", b"y.test"]])
        self.assertEqual(addresses(b"<@r1.test,@r2.test:u@h.test>"), [[None, b"@r1.test,@r2.test", b"u", b"h.test"]])
        self.assertEqual(addresses(b"undisclosed-recipients:;"),
                         [[None, None, b"undisclosed-recipients", None], [None, None, None, None]])
        self.assertEqual(addresses(b"nodomain"), [[None, None, b"nodomain", b"MISSING_DOMAIN"]])
        self.assertIsNone(addresses(None))

    def test_display_names(self) -> None:
        """Phrases (atoms, quoted strings, obs-phrase dots, encoded words left encoded) and comments as names."""
        cases = {
            b"Real Name <user@domain>": [b"Real Name", None, b"user", b"domain"],
            b'"Real Name" <user@domain>': [b"Real Name", None, b"user", b"domain"],
            b"Real Name<user@domain>": [b"Real Name", None, b"user", b"domain"],
            b"Mr. Real Name <u@d.test>": [b"Mr. Real Name", None, b"u", b"d.test"],
            b"=?utf-8?q?R=C3=A9al?= Name <u@d.test>": [b"=?utf-8?q?R=C3=A9al?= Name", None, b"u", b"d.test"],
            b"user@domain (Real Name)": [b"Real Name", None, b"user", b"domain"],
            b"Real (a comment) Name <u@d.test>": [b"Real Name", None, b"u", b"d.test"],
            b"first.last@d.test": [None, None, b"first.last", b"d.test"],
        }
        for raw, want in cases.items():
            self.assertEqual(addresses(raw), [want], raw)
        self.assertEqual(encode(envelope(parse_message(b"From: Real Name <user@domain>\r\n\r\n"))[2]),
                         b'(("Real Name" NIL "user" "domain"))')
        self.assertEqual(addresses(b"Team: Real Name <a@b.test>, c@d.test;"),
                         [[None, None, b"Team", None], [b"Real Name", None, b"a", b"b.test"],
                          [None, None, b"c", b"d.test"], [None, None, None, None]])

    def test_malformed_addresses_terminate(self) -> None:
        """A stray ")" (issue 12: it looped forever), unbalanced brackets and quotes give a best effort or NIL."""
        from mailgw.imap.envelope import _tokens
        self.assertEqual(_tokens(b"a) b"), [("a", b"a"), ("a", b"b")])
        self.assertEqual(addresses(b"a) b"), [[None, None, b"ab", b"MISSING_DOMAIN"]])
        for raw in (b")", b")))", b"((((", b"(a\\", b'"open', b"<a@b", b">", b"[", b"@", b":;", b"a\\", b"\\"):
            out = addresses(raw)
            self.assertTrue(out is None or isinstance(out, list), raw)
        self.assertEqual(addresses(b"x) <y@z.test>"), [[b"x", None, b"y", b"z.test"]])

    def test_many_addresses_linear(self) -> None:
        """100,000 addresses in one header are handled in linear time (CVE-2024-23184 class)."""
        raw = b", ".join(b"user%d@example.test" % i for i in range(100000))
        t0 = time.perf_counter()
        out = addresses(raw)
        self.assertLess(time.perf_counter() - t0, 5.0)
        assert out is not None
        self.assertEqual(len(out), 10000)  # capped

    def test_huge_header_values_are_bounded(self) -> None:
        """A 10 MB `To: a,a,...` and a million Content-Language tags cost bounded time and output."""
        from mailgw.imap.envelope import _tokens
        raw = b"a," * 5000000
        self.assertEqual(len(_tokens(raw)), 100000)
        t0 = time.perf_counter()
        out = addresses(raw)
        self.assertLess(time.perf_counter() - t0, 5.0)
        assert out is not None
        self.assertEqual(len(out), 10000)
        value = encode(bodystructure(parse_message(b"Content-Language: " + b"en," * 1000000 + b"\r\n\r\nx")))
        self.assertLess(len(value), 1000)

    def test_envelope_defaults(self) -> None:
        """Sender and Reply-To default to From; absent fields are NIL."""
        env = envelope(parse_message(b"From: a@b.test\r\n\r\n"))
        self.assertEqual(env[2], env[3])
        self.assertEqual(env[2], env[4])
        self.assertIsNone(env[0])
        self.assertIsNone(env[5])


class HostileTests(unittest.SynchronousTestCase):
    """Hostile structure costs linear time and never raises."""

    def test_deep_multipart(self) -> None:
        """500 nested multiparts stop at the depth cap and still serialise."""
        msg = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(500))
        out = encode(bodystructure(parse_message(msg + b"x\r\n")))
        self.assertTrue(out.startswith(b"((("))

    def test_many_parts(self) -> None:
        """A multipart with 20,000 parts is split in linear time (the tree is capped at 10,000 parts)."""
        body = b"".join(b"--z\r\n\r\np%d\r\n" % i for i in range(20000)) + b"--z--\r\n"
        t0 = time.perf_counter()
        root = parse_message(b"Content-Type: multipart/mixed; boundary=z\r\n\r\n" + body)
        self.assertEqual(len(root.children), 9999)  # the root is the 10,000th
        self.assertLess(time.perf_counter() - t0, 5.0)

    def test_part_budget_is_shared_by_the_tree(self) -> None:
        """Nested multiparts of many tiny parts stop at 10,000 parts in the whole tree, not per level."""
        inner = b"Content-Type: multipart/mixed; boundary=y\r\n\r\n" + b"--y\r\n\r\n.\r\n" * 3000 + b"--y--\r\n"
        body = b"".join(b"--z\r\n" + inner for _ in range(10)) + b"--z--\r\n"
        root = parse_message(b"Content-Type: multipart/mixed; boundary=z\r\n\r\n" + body)
        count, stack = 0, [root]
        while stack:
            part = stack.pop()
            count += 1
            stack.extend(part.children)
        self.assertLessEqual(count, 10000 + 10)  # + at most one placeholder per starved multipart


class FetchCacheTests(unittest.SynchronousTestCase):
    """The ENVELOPE/BODYSTRUCTURE cache is bounded by entries and bytes."""

    def test_bounds(self) -> None:
        """Big values are not cached; the oldest entries go when either bound is reached."""
        from mailgw.imap.fetch import FetchCache
        cache = FetchCache(size=3, max_bytes=100)
        cache.put("big", b"x" * 20000)
        self.assertIsNone(cache.get("big"))
        for i in range(5):
            cache.put(i, b"y" * 10)
        self.assertEqual([cache.get(i) is not None for i in range(5)], [False, False, True, True, True])
        cache.put("a", b"z" * 60)
        cache.put("b", b"z" * 60)
        self.assertIsNone(cache.get("a"))
        self.assertLessEqual(cache.bytes, 100)
