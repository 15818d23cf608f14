"""Selected-state commands: CHECK, CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE, FETCH, STORE, SEARCH, COPY, MOVE."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterator, Optional

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailgw.errors import MessageExpunged, NoSuchMailbox
from mailgw.imap.fetch import MessageData, fetch_loop, fetch_response, flags_of, load_batch, plan
from mailgw.imap.fetchdata import ReadAhead
from mailgw.imap.names import decode_mailbox
from mailgw.imap.pacing import Pacer
from mailgw.imap.search import Context, matches_paced
from mailgw.imap.searchplan import search_need
from mailgw.imap.session import SELECTED, Reply
from mailgw.imap.wire.grammar import Request
from mailgw.imap.wire.searchspec import Key
from mailgw.imap.wire.response import tagged
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
    infos = _infos(folder.messages(), [s.uids[p] for p in picked])
    seen: Deferred[Any] = succeed({})
    if not folder.readonly and any(i.sets_seen() for i in items):
        unseen = [s.uids[p] for p in picked if s.uids[p] in infos and "\\Seen" not in infos[s.uids[p]].flags]
        if unseen:
            seen = folder.store_flags(unseen, frozenset({"\\Seen"}), "add")
    seen.addCallback(lambda changed: ensureDeferred(_fetch(s, req, folder, picked, items, changed, infos)))
    return seen


async def _fetch(s: "IMAPSession", req: Request, folder: Any, picked: list[int], items: list[Any],
                 changed: dict[int, frozenset[str]], infos: dict[int, Any]) -> bytes:
    current = _infos(folder.messages(), list(infos)) if changed else infos
    recent = folder.recent_uids()
    fast = s.policy.fast_message_retrieval
    view = s.presentation()  # calendaring (mailgw.imap.calendaring): None shows messages as stored
    missing = False
    work = []
    for pos in picked:
        info = current.get(s.uids[pos]) if pos < len(s.uids) else None
        if info is None:
            missing = True
            continue
        data = MessageData(folder, info, fast, s.fetch_cache, s.user, view)
        work.append((pos + 1, data, plan(data, items)))

    def respond(seq: int, data: MessageData) -> list[Any]:
        uid = data.info.uid
        pieces: list[Any] = fetch_response(seq, data, items, uid in recent, req.uid, uid in changed)
        # another session's new keyword not yet in this client's FLAGS (RFC 3501 §7.2.6)
        announce = s.keyword_update(data.info.flags)
        return [announce] + pieces if announce else pieces

    ahead = _read_ahead(s, folder)
    extra: list[int] = []
    if len(work) == 1 and work[0][2].body and work[0][1].info.uid not in ahead.bodies and s.framer.buffered():
        seq = work[0][0]  # a miss while more commands wait: likely one FETCH per message (mbsync)
        following = s.uids[seq : seq + ReadAhead.COUNT]
        known = _infos(folder.messages(), following)
        extra = ahead.candidates([known[u] for u in following if u in known])
    missing = await fetch_loop(s, folder, work, respond, s.limits.fetch_batch, ahead, extra) or missing
    if not s.framer.buffered():
        ahead.clear()
    if missing:
        return tagged(req.tag, b"NO", b"Some messages were expunged or unreadable.", b"EXPUNGEISSUED")
    return tagged(req.tag, b"OK", b"Fetch completed.")


def _infos(messages: "tuple[Any, ...]", uids: list[int]) -> dict[int, Any]:
    """MessageInfo of the given uids (a view's snapshot is ascending by uid): O(k log n) for a few, O(n) for many."""
    if len(uids) * 16 > len(messages):
        return {m.uid: m for m in messages}
    out = {}
    for uid in uids:
        i = bisect_left(messages, uid, key=_uid_of)
        if i < len(messages) and messages[i].uid == uid:
            out[uid] = messages[i]
    return out


def _uid_of(info: Any) -> int:
    return info.uid  # type: ignore[no-any-return]


def _read_ahead(s: "IMAPSession", folder: Any) -> ReadAhead:
    """The session's read-ahead bodies, for the selected folder only."""
    ahead: "ReadAhead | None" = getattr(s, "fetch_read_ahead", None)
    if ahead is None or ahead.folder is not folder:
        if ahead is not None:
            ahead.clear()
        ahead = ReadAhead(folder)
        s.fetch_read_ahead = ahead  # type: ignore[attr-defined]
    return ahead


def cmd_store(s: "IMAPSession", req: Request) -> Any:
    sset, mode, silent, flags = req.args
    assert isinstance(sset, SequenceSet) and isinstance(flags, tuple)
    folder = _folder(s)
    picked = positions(s, sset, req.uid)
    uids = [s.uids[p] for p in picked]
    wanted = frozenset(f for f in flags if f != "\\Recent")
    d = folder.store_flags(uids, wanted, mode) if uids else succeed({})

    def stored(result: dict[int, frozenset[str]]) -> bytes:
        # RFC 3501 §7.2.6: a new keyword is announced before the FETCH that shows it (.SILENT too)
        announce = s.keyword_update({f for flags in result.values() for f in flags})
        if announce:
            s.send(announce)
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
    return ensureDeferred(_search(s, req, key))


SEARCH_BATCH_BYTES = 8 * 1024 * 1024  # whole messages one SEARCH batch may load at once (BODY/TEXT keys)


async def _search(s: "IMAPSession", req: Request, key: Key) -> Optional[bytes]:
    """Batches loaded by one store job each, then one message at a time, yielding every pacing.SLICE.

    The view (sequence map, index snapshot) is fixed when the command starts: no untagged EXPUNGE can
    arrive during SEARCH (RFC 3501 §7.4.1), and a message removed meanwhile simply does not match.
    """
    folder = _folder(s)
    recent = folder.recent_uids()
    fast = s.policy.fast_message_retrieval
    uids = s.uids
    count = len(uids)
    max_uid = uids[-1] if uids else 0
    cache: dict[int, list[tuple[int, int]]] = {}
    index = {m.uid: m for m in folder.messages()}
    need = search_need(key, fast)
    hits: list[int] = []
    pacer = Pacer(s.reactor, lambda: s.closing)
    view = s.presentation()  # calendaring: LARGER/SMALLER/BODY/TEXT see what FETCH shows
    for chunk in _search_batches(folder, uids, index, fast, need.body, max(1, s.limits.fetch_batch), s.user, view):
        try:
            if need.header or need.body or view is not None:
                await load_batch(folder, [(d, need) for _, d in chunk])  # one store job per batch, in the pool
            for pos, data in chunk:
                if not await pacer.tick():
                    return None
                uid = data.info.uid
                if data.missing:
                    continue
                try:
                    hit = await matches_paced(key, Context(pos + 1, data, uid in recent, count, max_uid, cache), pacer)  # type: ignore[arg-type]
                    if hit is None:
                        return None
                    if hit:
                        hits.append(uid if req.uid else pos + 1)
                except MessageExpunged:
                    pass
                except Exception:
                    log.failure("search of uid {uid} failed", uid=uid, event="imap.search_error")
                finally:
                    data.close()
        finally:
            for _, data in chunk:
                data.close()
    s.send(b"* SEARCH" + b"".join(b" %d" % n for n in hits) + b"\r\n")
    return tagged(req.tag, b"OK", b"Search completed.")


def _search_batches(folder: Any, uids: Any, index: dict[int, Any], fast: bool, bodies: bool,
                    batch: int, owner: str = "", view: Any = None) -> "Iterator[list[tuple[int, MessageData]]]":
    """Batches of at most `batch` messages and, when bodies are loaded, about SEARCH_BATCH_BYTES of them."""
    chunk: list[tuple[int, MessageData]] = []
    size = 0
    for pos, uid in enumerate(uids):
        info = index.get(uid)
        if info is None:
            continue
        chunk.append((pos, MessageData(folder, info, fast, owner=owner, view=view)))
        size += info.size if bodies else 0
        if len(chunk) >= batch or size >= SEARCH_BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


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
