"""Concurrency cases every IMessageStore must survive: run against the memory store and the Maildir store."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks, maybeDeferred

from mailgw.errors import MessageExpunged
from mailgw.store import names
from tests.store.store_contract import msg


def with_id(n: int) -> bytes:
    """A message whose Message-ID names its number."""
    return (b"From: a@example.com\r\nSubject: m%d\r\nMessage-ID: <m%d@example.test>\r\n\r\nbody %d\r\n"
            % (n, n, n))


def message_id(block: bytes) -> bytes:
    for line in block.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip()
    return b""


class StoreConcurrency:
    """Mixin: the subclass provides make_store(**kw)."""

    def make_store(self, **kw: Any) -> Any:
        raise NotImplementedError

    @inlineCallbacks
    def test_concurrent_subscriptions_lose_nothing(self) -> Any:
        """Two sessions subscribing (and unsubscribing) at once never fail and never lose a name."""
        acct = yield self.make_store().open_account("alice")
        for i in range(40):
            yield gatherResults([acct.subscribe(f"A{i}"), acct.subscribe(f"B{i}"), acct.unsubscribe(f"B{i - 1}")],
                                consumeErrors=True)
        subs = set((yield acct.subscriptions()))
        self.assertEqual({f"A{i}" for i in range(40)} - subs, set())  # type: ignore[attr-defined]
        self.assertEqual({s for s in subs if s.startswith("B")}, {"B39"})  # type: ignore[attr-defined]
        self.assertLessEqual({names.INBOX, *names.SPECIAL_USE}, subs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_first_login_races_first_delivery(self) -> Any:
        """A new user's first login and first delivery at once: one account, set up once, the message counted once."""
        store = self.make_store(quota_messages=100)
        for i in range(12):
            user = f"new{i}"
            acct, result = yield gatherResults([store.open_account(user), store.deliver(user, msg(i))],
                                               consumeErrors=True)
            again = yield store.open_account(user)
            self.assertIs(acct, again)  # type: ignore[attr-defined]
            self.assertEqual(result.uid, 1)  # type: ignore[attr-defined]
            self.assertLessEqual({names.INBOX, *names.SPECIAL_USE}, set((yield acct.subscriptions())))  # type: ignore[attr-defined]
            self.assertEqual((yield acct.status("INBOX")).messages, 1)  # type: ignore[attr-defined]
            self.assertEqual(acct.quota().messages_used, 1)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_headers_belong_to_their_uids_while_the_index_is_saved(self) -> Any:
        """Header fetches interleaved with expunges and index saves always return the header of the UID asked for."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        for i in range(1, 41):
            yield acct.append("INBOX", with_id(i))
        a = yield acct.open_folder("INBOX")
        b = yield acct.open_folder("INBOX")
        doomed = [u for u in range(1, 41) if u % 5]
        yield b.store_flags(doomed, frozenset({"\\Deleted"}), "add")
        reads = [maybeDeferred(a.header_bytes, u) for u in range(1, 41)]
        expunge = b.expunge()
        reads += [maybeDeferred(a.header_bytes, u) for u in range(1, 41)]
        for uid, d in zip(list(range(1, 41)) * 2, reads):
            try:
                block = yield d
            except MessageExpunged:
                continue
            self.assertEqual(message_id(block), b"<m%d@example.test>" % uid)  # type: ignore[attr-defined]
        yield expunge
        a.close()
        b.close()

    @inlineCallbacks
    def test_fetch_during_expunge_from_another_session(self) -> Any:
        """A message opened before another session expunges it reads whole; after, it is MessageExpunged, never another's."""
        store = self.make_store()
        acct = yield store.open_account("alice")
        for i in range(1, 6):
            yield acct.append("INBOX", with_id(i))
        a = yield acct.open_folder("INBOX")
        b = yield acct.open_folder("INBOX")
        body = yield a.open_message(3)
        yield b.store_flags([2, 3, 4], frozenset({"\\Deleted"}), "add")
        opening = [a.open_message(u) for u in (1, 2, 3, 4, 5)]
        yield b.expunge()
        self.assertEqual((yield body.read_all()), with_id(3))  # type: ignore[attr-defined]
        body.close()
        for uid, d in zip((1, 2, 3, 4, 5), opening):
            try:
                got = yield d
            except MessageExpunged:
                continue
            self.assertEqual((yield got.read_all()), with_id(uid))  # type: ignore[attr-defined]
            got.close()
        yield self.assertFailure(a.open_message(3), MessageExpunged)  # type: ignore[attr-defined]
        yield self.assertFailure(a.header_bytes(3), MessageExpunged)  # type: ignore[attr-defined]
        yield a.refresh()
        self.assertEqual([m.uid for m in a.messages()], [1, 5])  # type: ignore[attr-defined]
        a.close()
        b.close()
