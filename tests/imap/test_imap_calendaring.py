"""Calendaring, offline: which messages are meeting requests, the presented bytes, the link, the cache."""

from __future__ import annotations

import email
import email.policy
import time
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from mailgw.config.validate import CALENDARING_PATH_FIELDS
from mailgw.imap.calendaring import PATH_FIELDS, CalendarSettings, Presenter, Where, link, plan, present
from mailgw.imap.calendaring.link import uid_url
from mailgw.imap.calendaring.present import EXAMINE, PresentedBody
from mailgw.imap.mime import header_end
from mailgw.store.body import BytesBody
from tests.imap import calendaring_fixtures as F

OWA = CalendarSettings("owa.example.com", True, hostname="mail.example.com")
WHERE = Where("bob", "INBOX", 7, 1234)
MEETINGS = ("outlook", "google", "thunderbird_attachment", "bare", "cancel")


def parsed(raw: bytes) -> Any:
    return email.message_from_bytes(raw, policy=email.policy.default)


def summary_text(raw: bytes) -> str:
    msg = parsed(raw)
    first = msg.get_payload()[0]
    return first.get_payload()[0].get_content()


def stored_body(raw: bytes) -> bytes:
    return raw[header_end(raw, 0, len(raw)):]


class PresentTests(SynchronousTestCase):
    """The presented form of each client's meeting request, re-parsed with Python's email package."""

    def test_wrapper_around_unchanged_original(self) -> None:
        """Every fixture becomes multipart/mixed(alternative(plain, html), the original entity byte for byte)."""
        for name in MEETINGS:
            raw = getattr(F, name)()
            out = present(raw, OWA, WHERE)
            assert out is not None, name
            msg = parsed(out)
            self.assertEqual(msg.get_content_type(), "multipart/mixed", name)
            summary, original = msg.get_payload()
            self.assertEqual([p.get_content_type() for p in summary.get_payload()], ["text/plain", "text/html"], name)
            self.assertEqual(original.get_content_type(), parsed(raw).get_content_type(), name)
            self.assertTrue(out.find(stored_body(raw)) > 0, name)  # the stored body, verbatim
            self.assertTrue(any(p.get_content_type() == "text/calendar" for p in msg.walk()), name)

    def test_headers_unchanged_but_content_type_and_mime_version(self) -> None:
        """The wrapper keeps every other header field, in order, byte for byte."""
        for name in MEETINGS:
            raw = getattr(F, name)()
            out = present(raw, OWA, WHERE)
            assert out is not None

            def others(data: bytes) -> list[tuple[str, str]]:
                return [(k, v) for k, v in email.message_from_bytes(data).items()
                        if not k.lower().startswith(("content-type", "content-transfer-encoding", "content-disposition",
                                                     "mime-version"))]
            self.assertEqual(others(out), others(raw), name)
            self.assertEqual(parsed(out)["MIME-Version"], "1.0")

    def test_summary_of_outlook_request(self) -> None:
        """What, when in the event's zone and in UTC, where, organizer and the link."""
        text = summary_text(present(F.outlook(), OWA, WHERE))  # type: ignore[arg-type]
        self.assertIn("Meeting request: Quarterly review", text)
        self.assertIn("Thu 10 Dec 2026 14:00 - 15:00 (W. Europe Standard Time)", text)
        self.assertIn("Thu 10 Dec 2026 13:00 - 14:00 UTC", text)
        self.assertIn("Room 4.12", text)
        self.assertIn("Alice Example <alice@example.com>", text)
        self.assertIn("https://owa.example.com/exchange/bob/INBOX/?cmd=open&uid=040000008200E00074C5B7101A82E00800000000A1B2C3D4", text)
        html = parsed(present(F.outlook(), OWA, WHERE)).get_payload()[0].get_payload()[1].get_content()  # type: ignore[arg-type]
        self.assertIn('<a href="https://owa.example.com/exchange/bob/INBOX/?cmd=open&amp;uid=0400', html)

    def test_google_utc_request_and_escaped_uid(self) -> None:
        """A UTC event shows one UTC line; the iCalendar UID is URL-escaped in the link."""
        text = summary_text(present(F.google(), OWA, WHERE))  # type: ignore[arg-type]
        self.assertIn("Thu 10 Dec 2026 13:00 - 14:00 UTC", text)
        self.assertNotIn("(UTC)", text)
        self.assertIn("uid=7kukuqrfedlm2f9t%40google.com", text)

    def test_bare_calendar_8bit(self) -> None:
        """A bare text/calendar message: its CTE moves into the second part, the summary decodes to UTF-8."""
        out = present(F.bare(), OWA, WHERE)
        assert out is not None
        msg = parsed(out)
        self.assertIn("Besprechung über Q4", summary_text(out))
        inner = msg.get_payload()[1]
        self.assertEqual((inner.get_content_type(), inner["Content-Transfer-Encoding"]), ("text/calendar", "8bit"))
        self.assertIn("BEGIN:VCALENDAR", inner.get_content())

    def test_cancel_and_counter(self) -> None:
        """CANCEL and COUNTER get the link too, with their own title."""
        self.assertIn("Meeting cancelled: Canceled: Quarterly review", summary_text(present(F.cancel(), OWA, WHERE)))  # type: ignore[arg-type]
        self.assertIn("New time proposed:", summary_text(present(F.bare(b"COUNTER"), OWA, WHERE)))  # type: ignore[arg-type]

    def test_left_as_stored(self) -> None:
        """Malformed iCalendar, PUBLISH, plain mail, text/plain and a forwarded invitation give None."""
        forwarded = (F.HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=f\r\n\r\n--f\r\n"
                     b"Content-Type: message/rfc822\r\n\r\n" + F.outlook() + b"\r\n--f--\r\n")
        for raw in (F.malformed(), F.publish(), F.plain_mail(), F.HEAD + b"\r\nhello\r\n", forwarded, b"", b"\r\n"):
            self.assertIsNone(present(raw, OWA, WHERE), raw[-80:])

    def test_oversized_calendar_part_left_as_stored(self) -> None:
        """A calendar part above the cap is not parsed."""
        huge = F.bare().replace(b"LOCATION;LANGUAGE=en-US:Room 4.12\r\n",
                                b"".join(b"X-PAD:" + b"p" * 70 + b"\r\n" for _ in range(4000)))
        self.assertIsNone(present(huge, OWA, WHERE))

    def test_summary_cannot_inject_lines(self) -> None:
        """A SUMMARY carrying escaped CR LF stays one line of the summary."""
        raw = F.bare().replace(b"Besprechung \xc3\xbcber Q4", b"x\\r\\nBcc: evil@example.com\\n<script>")
        out = present(raw, OWA, WHERE)
        assert out is not None
        self.assertIn("Meeting request: x", summary_text(out).splitlines()[0])
        self.assertNotIn("<script>", parsed(out).get_payload()[0].get_payload()[1].get_content())

    def test_all_day_and_floating(self) -> None:
        """An all-day event shows its days; a floating time says so and has no UTC line."""
        allday = F.bare().replace(b"DTSTART;TZID=W. Europe Standard Time:20261210T140000", b"DTSTART;VALUE=DATE:20261210") \
            .replace(b"DTEND;TZID=W. Europe Standard Time:20261210T150000", b"DTEND;VALUE=DATE:20261212")
        self.assertIn("Thu 10 Dec 2026 - Fri 11 Dec 2026 (all day)", summary_text(present(allday, OWA, WHERE)))  # type: ignore[arg-type]
        floating = F.bare().replace(b";TZID=W. Europe Standard Time:", b":")
        text = summary_text(present(floating, OWA, WHERE))  # type: ignore[arg-type]
        self.assertIn("14:00 - 15:00 (floating time", text)
        self.assertNotIn("UTC", text)

    def test_deterministic(self) -> None:
        """The same message and settings always give the same bytes (clients cache by UID)."""
        self.assertEqual(present(F.outlook(), OWA, WHERE), present(F.outlook(), OWA, WHERE))


class LinkTests(SynchronousTestCase):
    """The link: scheme from use_ssl, the template's placeholders URL-escaped."""

    def test_scheme(self) -> None:
        """https:// by default, http:// only with use_ssl = false."""
        self.assertTrue(link(OWA, WHERE, "u").startswith("https://owa.example.com/exchange/bob/INBOX/"))
        plain = CalendarSettings("owa.example.com", False)
        self.assertTrue(link(plain, WHERE, "u").startswith("http://owa.example.com/"))

    def test_every_placeholder_escaped(self) -> None:
        """user, mailbox (keeping /), uid, uidvalidity, uid_url (RFC 5092) and ical_uid."""
        where = Where("bob@example.com", "Archive/Über uns", 42, 99)
        s = CalendarSettings("owa.example.com", True, "/x?u={user}&m={mailbox}&n={uid}&v={uidvalidity}&url={uid_url}&i={ical_uid}",
                             "mail.example.com")
        self.assertEqual(uid_url(s, where), "imap://bob%40example.com@mail.example.com/Archive/%C3%9Cber%20uns;UIDVALIDITY=99/;UID=42")
        got = link(s, where, "a b&c")
        self.assertEqual(got, "https://owa.example.com/x?u=bob%40example.com&m=Archive/%C3%9Cber%20uns&n=42&v=99"
                              "&url=imap%3A%2F%2Fbob%2540example.com%40mail.example.com%2FArchive%2F%25C3%259Cber%2520uns"
                              "%3BUIDVALIDITY%3D99%2F%3BUID%3D42&i=a%20b%26c")

    def test_fields_agree_with_config(self) -> None:
        """check-config knows the same placeholders as the presenter."""
        self.assertEqual(PATH_FIELDS, CALENDARING_PATH_FIELDS)


class BigMessageTests(SynchronousTestCase):
    """Only the first EXAMINE octets decide; sizes and byte ranges follow from the stored size."""

    def big(self) -> bytes:
        pdf = b"JVBERi0xLjQK" * 6 + b"\r\n"
        return F.google().replace(b"--000000000000mixed--\r\n",
                                  b"--000000000000mixed\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                                  + pdf * 40000 + b"--000000000000mixed--\r\n")

    def test_prefix_decides_like_the_whole(self) -> None:
        """plan() on the first EXAMINE + 1 octets gives the recipe of the whole 3 MB message."""
        raw = self.big()
        self.assertGreater(len(raw), 4 * EXAMINE)
        whole, prefix = plan(raw, OWA, WHERE), plan(raw[: EXAMINE + 1], OWA, WHERE)
        self.assertIsNotNone(whole)
        self.assertEqual(whole, prefix)
        out = present(raw, OWA, WHERE)
        assert out is not None and whole is not None
        self.assertEqual(len(out), whole.size(len(raw)))
        self.assertEqual(parsed(out).get_payload()[1].get_payload()[-1].get_content_type(), "application/pdf")

    def test_presented_body_reads_presented_bytes(self) -> None:
        """Reads at any offset of the presented body equal slices of the presented bytes."""
        raw = F.outlook()
        recipe = plan(raw, OWA, WHERE)
        assert recipe is not None
        out = recipe.apply(raw)
        body = PresentedBody(BytesBody(raw), recipe)
        self.assertEqual(body.size, len(out))
        self.assertEqual(self.successResultOf(body.read_all()), out)
        for origin, count in ((0, 10), (len(recipe.head) - 5, 20), (len(out) - 30, 100), (len(out) + 5, 3), (100, 0)):
            self.assertEqual(self.successResultOf(body.read(origin, count)), out[origin: origin + count], (origin, count))


class Folder:
    """The asynchronous IFolder reads MessageData's loader uses (headers, open_messages), counting opens."""

    name, uid_validity = "INBOX", 1234

    def __init__(self, messages: dict[int, bytes]) -> None:
        self.messages, self.opened = messages, 0

    def open_messages(self, uids: list[int]) -> "Deferred[dict[int, BytesBody]]":
        self.opened += len(uids)
        return succeed({u: BytesBody(self.messages[u]) for u in uids})

    def headers(self, uids: list[int]) -> "Deferred[dict[int, bytes]]":
        return succeed({u: self.messages[u][: header_end(self.messages[u], 0, len(self.messages[u]))] for u in uids})


class PresenterTests(SynchronousTestCase):
    """MessageData through a Presentation: consistent items, one examination per configuration."""

    header = full = True  # what the loads below ask for (size alone when both are false)

    def data(self, folder: Folder, uid: int, view: Any, fast: bool = True) -> Any:
        from datetime import datetime, timezone

        from mailgw.imap.fetch import MessageData
        from mailgw.interfaces import MessageInfo

        from mailgw.imap.fetchdata import Need, load_batch

        info = MessageInfo(uid, frozenset(), len(folder.messages[uid]), datetime(2026, 12, 1, tzinfo=timezone.utc))
        data = MessageData(folder, info, fast, None, "bob", view)  # type: ignore[arg-type]
        need = Need(header=self.header, full=self.full or not fast, body=self.full or not fast)
        self.successResultOf(load_batch(folder, [(data, need)]))  # type: ignore[arg-type]
        return data

    def test_fast_size_header_full_agree(self) -> None:
        """RFC822.SIZE, the header and the whole message agree, fast or not."""
        folder = Folder({1: F.outlook()})
        for fast in (True, False):
            presenter = Presenter(OWA)
            self.full = False
            d = self.data(folder, 1, presenter.current(), fast)
            size, header = d.size(), d.header()
            self.full = True
            full = self.data(folder, 1, presenter.current(), fast).full()
            self.assertEqual(size, len(full))
            self.assertTrue(full.startswith(header))
            self.assertIn(b"multipart/mixed", header)
            self.assertEqual(full, present(F.outlook(), OWA, Where("bob", "INBOX", 1, 1234)))

    def test_examined_once_and_plain_mail_never_opened(self) -> None:
        """A meeting request's file is opened once for its size; a text/plain message is never opened for it."""
        folder = Folder({1: F.outlook(), 2: F.HEAD + b"\r\nhello\r\n"})
        presenter = Presenter(OWA)
        self.header = self.full = False
        for _ in range(3):
            self.data(folder, 1, presenter.current()).size()
            self.assertEqual(self.data(folder, 2, presenter.current()).size(), len(folder.messages[2]))
        self.assertEqual(folder.opened, 1)

    def test_reconfigure_recomputes(self) -> None:
        """A new front end (reload) gives a new fingerprint and a new link; None shows messages as stored."""
        folder = Folder({1: F.outlook()})
        presenter = Presenter(OWA)
        self.assertIn(b"owa.example.com", self.data(folder, 1, presenter.current()).full())
        presenter.configure(CalendarSettings("web.example.com", False, hostname="mail.example.com"))
        self.assertIn(b"http://web.example.com", self.data(folder, 1, presenter.current()).full())
        presenter.configure(None)
        self.assertIsNone(presenter.current())
        self.assertEqual(self.data(folder, 1, None).full(), F.outlook())


class PropertyTests(SynchronousTestCase):
    """Hostile input: never an exception, always quick."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=4096))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        """Arbitrary bytes never raise and take well under a second."""
        started = time.monotonic()
        out = present(raw, OWA, WHERE)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertTrue(out is None or isinstance(out, bytes))

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(MEETINGS), st.integers(0, 6000), st.integers(0, 200), st.binary(max_size=64))
    def test_mutated_meeting_requests(self, name: str, at: int, cut: int, junk: bytes) -> None:
        """A meeting request with bytes replaced anywhere never raises; when presented, it re-parses."""
        raw = getattr(F, name)()
        at %= len(raw)
        raw = raw[:at] + junk + raw[at + cut:]
        out = present(raw, OWA, WHERE)
        if out is not None:
            self.assertEqual(parsed(out).get_content_type(), "multipart/mixed")
            self.assertIn(stored_body(raw), out)
