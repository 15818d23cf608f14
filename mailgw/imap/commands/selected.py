"""Selected-state commands: CHECK, CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE, FETCH, STORE, SEARCH, COPY, MOVE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailgw.errors import MessageExpunged, NoSuchMailbox
from mailgw.imap.fetch import MessageData, fetch_response, flags_of, paced_loop
from mailgw.imap.names import decode_mailbox
from mailgw.imap.pacing import Pacer
from mailgw.imap.search import Context, matches_paced
from mailgw.imap.session import SELECTED, Reply
from mailgw.imap.wire.grammar import Request
from mailgw.imap.wire.response import tagged
from mailgw.imap.wire.searchspec import Key
from mailgw.imap.wire.sequence import SequenceSet, format_uids

if TYPE_CHECKING:
    from mailgw.imap.session import IMAPSession

log = Logger()
SEL = frozenset({SELECTED})


def positions(s: "IMAPSession", sset: SequenceSet, uid: bool) -> list[int]:
    """0-based positions in the session's sequence map selected by a sequence or UID set."""
    if uid:
        return sset.uid_indexes(s.uids)
    return [n - 1 for n in sset.sequence_numbers(len(s.uids))]


def send_expunges(s: "IMAPSession", gone: list[int]) -> None:
    """`* n EXPUNGE` for our own removals, ascending with renumbering (RFC 3501 §7.4.1 example)."""
    dead = set(gone)
    out = []
    removed = 0
    keep = []
    for pos, uid in enumerate(s.uids):
        if uid in dead:
            out.append(b"* %d EXPUNGE\r\n" % (pos + 1 - removed))
            removed += 1
        else:
            keep.append(uid)
    s.uids = keep
    if out:
        s.send(b"".join(out))


def _folder(s: "IMAPSession") -> Any:
    assert s.folder is not None
    return s.folder


def cmd_check(s: "IMAPSession", req: Request) -> Any:
    d = s.report_updates()
    d.addCallback(lambda _: tagged(req.tag, b"OK", b"Check completed."))
    return d


def cmd_close(s: "IMAPSession", req: Request) -> Any:
    folder = _folder(s)
    d: Deferred[Any] = succeed(None) if folder.readonly else folder.expunge()  # silently (§6.4.2)

    def closed(_: Any) -> bytes:
        s.close_folder()
        return tagged(req.tag, b"OK", b"Close completed.")

    d.addCallback(closed)
    return d


def cmd_unselect(s: "IMAPSession", req: Request) -> bytes:
    s.close_folder()
    return tagged(req.tag, b"OK", b"Unselect completed.")


def cmd_expunge(s: "IMAPSession", req: Request) -> Any:
    folder = _folder(s)
    only = None
    if req.uid:
        sset = req.args[0]
        assert isinstance(sset, SequenceSet)
        only = [s.uids[p] for p in positions(s, sset, True)]
    d = folder.expunge(only)

    def done(gone: list[int]) -> bytes:
        send_expunges(s, gone)
        return tagged(req.tag, b"OK", b"Expunge completed.")

    d.addCallback(done)
    return d


def cmd_fetch(s: "IMAPSession", req: Request) -> Any:
    sset, items = req.args
    assert isinstance(sset, SequenceSet) and isinstance(items, list)
    folder = _folder(s)
    picked = positions(s, sset, req.uid)
    infos = {m.uid: m for m in folder.messages()}
    seen: Deferred[Any] = succeed({})
    if not folder.readonly and any(i.sets_seen() for i in items):
        unseen = [s.uids[p] for p in picked if s.uids[p] in infos and "\\Seen" not in infos[s.uids[p]].flags]
        if unseen:
            seen = folder.store_flags(unseen, frozenset({"\\Seen"}), "add")
    done: Deferred[Any] = Deferred()

    def run(changed: dict[int, frozenset[str]]) -> "Deferred[Any]":
        current = {m.uid: m for m in folder.messages()} if changed else infos
        recent = folder.recent_uids()
        fast = s.policy.fast_message_retrieval
        view = s.presentation()  # calendaring (mailgw.imap.calendaring): None shows messages as stored
        missing = [False]

        def step(pos: int) -> Optional[list[Any]]:
            if pos >= len(s.uids):
                return None
            uid = s.uids[pos]
            info = current.get(uid)
            if info is None:
                missing[0] = True
                return None
            try:
                data = MessageData(folder, info, fast, s.fetch_cache, s.user, view)
                return fetch_response(pos + 1, data, items, uid in recent, req.uid, uid in changed)
            except MessageExpunged:
                missing[0] = True
            except Exception:
                log.failure("fetch of uid {uid} failed", uid=uid, event="imap.fetch_error")
                missing[0] = True
            return None

        def finished() -> None:
            if missing[0]:
                done.callback(tagged(req.tag, b"NO", b"Some messages were expunged or unreadable.",
                                     b"EXPUNGEISSUED"))
            else:
                done.callback(tagged(req.tag, b"OK", b"Fetch completed."))

        paced_loop(s, picked, step, finished, s.limits.fetch_batch)
        return done

    seen.addCallback(run)
    return seen


def cmd_store(s: "IMAPSession", req: Request) -> Any:
    sset, mode, silent, flags = req.args
    assert isinstance(sset, SequenceSet) and isinstance(flags, tuple)
    folder = _folder(s)
    picked = positions(s, sset, req.uid)
    uids = [s.uids[p] for p in picked]
    wanted = frozenset(f for f in flags if f != "\\Recent")
    d = folder.store_flags(uids, wanted, mode) if uids else succeed({})

    def stored(result: dict[int, frozenset[str]]) -> bytes:
        if not silent:
            recent = folder.recent_uids()
            out = []
            for p in picked:
                uid = s.uids[p]
                if uid in result:
                    extra = b" UID %d" % uid if req.uid else b""
                    out.append(b"* %d FETCH (FLAGS %s%s)\r\n" % (p + 1, flags_of(result[uid], uid in recent), extra))
            s.send(b"".join(out))
        return tagged(req.tag, b"OK", b"Store completed.")

    d.addCallback(stored)
    return d


def cmd_search(s: "IMAPSession", req: Request) -> Any:
    charset, key = req.args
    if charset not in (None, "UTF-8", "US-ASCII"):
        raise Reply(b"NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
    assert isinstance(key, Key)
    return Deferred.fromCoroutine(_search(s, req, key))


async def _search(s: "IMAPSession", req: Request, key: Key) -> Optional[bytes]:
    """One message at a time, yielding to the reactor every few milliseconds (pacing.Pacer).

    The view (sequence map, index snapshot) is fixed when the command starts: no untagged EXPUNGE can
    arrive during SEARCH (RFC 3501 §7.4.1), and a message removed meanwhile simply does not match.
    """
    folder = _folder(s)
    index = {m.uid: m for m in folder.messages()}
    recent = folder.recent_uids()
    fast = s.policy.fast_message_retrieval
    uids = list(s.uids)
    count = len(uids)
    max_uid = uids[-1] if uids else 0
    cache: dict[int, list[tuple[int, int]]] = {}
    hits: list[int] = []
    pacer = Pacer(s.reactor, lambda: s.closing)
    view = s.presentation()  # calendaring: LARGER/SMALLER/BODY/TEXT see what FETCH shows
    for pos, uid in enumerate(uids):
        if not await pacer.tick():
            return None
        info = index.get(uid)
        if info is None:
            continue
        # the message's bytes are read lazily by MessageData (an awaitable store read would go here)
        data = MessageData(folder, info, fast, owner=s.user, view=view)
        ctx = Context(pos + 1, data, uid in recent, count, max_uid, cache)
        try:
            hit = await matches_paced(key, ctx, pacer)
            if hit is None:
                return None
            if hit:
                hits.append(uid if req.uid else pos + 1)
        except MessageExpunged:
            pass
        except Exception:
            log.failure("search of uid {uid} failed", uid=uid, event="imap.search_error")
    s.send(b"* SEARCH" + b"".join(b" %d" % n for n in hits) + b"\r\n")
    return tagged(req.tag, b"OK", b"Search completed.")


def _destination(raw: object) -> str:
    assert isinstance(raw, bytes)
    return decode_mailbox(raw)


def _trycreate(f: Failure) -> Any:
    if f.check(NoSuchMailbox):
        raise Reply(b"NO", "Mailbox doesn't exist", "TRYCREATE")
    return f


def _copyuid(res: Any) -> bytes:
    src = format_uids([a for a, _ in res.pairs])
    dst = format_uids([b for _, b in res.pairs])
    return b"COPYUID %d %s %s" % (res.uid_validity, src, dst)


def cmd_copy(s: "IMAPSession", req: Request) -> Any:
    sset, raw = req.args
    assert isinstance(sset, SequenceSet)
    dest = _destination(raw)
    folder = _folder(s)
    uids = [s.uids[p] for p in positions(s, sset, req.uid)]
    move = req.name == "MOVE"
    if not uids:
        return tagged(req.tag, b"OK", b"No messages found.")
    d = folder.move(uids, dest) if move else folder.copy(uids, dest)

    def copied(res: Any) -> bytes:
        code = _copyuid(res) if res.pairs else b""
        if not move:
            return tagged(req.tag, b"OK", b"Copy completed.", code)
        if code:
            s.send(b"* OK [%s] Moved UIDs.\r\n" % code)  # RFC 6851 §4.3
        send_expunges(s, [a for a, _ in res.pairs])
        return tagged(req.tag, b"OK", b"Move completed.")

    d.addCallbacks(copied, _trycreate)
    return d


COMMANDS = {
    "CHECK": (cmd_check, SEL, True), "CLOSE": (cmd_close, SEL, True), "UNSELECT": (cmd_unselect, SEL, True),
    "EXPUNGE": (cmd_expunge, SEL, True), "FETCH": (cmd_fetch, SEL, False), "STORE": (cmd_store, SEL, False),
    "SEARCH": (cmd_search, SEL, False), "COPY": (cmd_copy, SEL, True), "MOVE": (cmd_copy, SEL, True),
}
