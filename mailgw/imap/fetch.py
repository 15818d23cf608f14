"""FETCH: data items of one message (RFC 3501 §6.4.5, §7.4.2) and the write-paced loop over a set.

With `fast_message_retrieval`, FLAGS, RFC822.SIZE, INTERNALDATE come from the index and
ENVELOPE / BODY.PEEK[HEADER...] / RFC822.HEADER from `IFolder.headers`, so header-first
clients never make the store open message files; otherwise everything is computed from the file.
Store reads are asynchronous: each batch's headers and bodies are loaded (one job each) before its
responses are built, and big bodies stream from the opened file chunk by chunk, paced by the
transport (docs/imap.md).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailgw.imap.envelope import bodystructure, envelope
from mailgw.imap.fetchdata import (  # noqa: F401  (re-exported: the FETCH data types live there)
    HEADER_ONLY,
    STREAM_THRESHOLD,
    FetchCache,
    MessageData,
    Need,
    NotLoaded,
    ReadAhead,
    Streamed,
    load_batch,
    plan,
)
from mailgw.imap.mime import section_bytes
from mailgw.imap.pacing import SLICE
from mailgw.imap.wire.fetchspec import FetchItem
from mailgw.imap.wire.response import Literal, encode, internal_date, sort_flags
from mailgw.interfaces import IFolder

log = Logger()

CHUNK = 64 * 1024  # one transport write
READ_CHUNK = 256 * 1024  # one read job in the store's pool
COALESCE = 64 * 1024  # small FETCH answers are written together up to about this much


def flags_of(flags: Iterable[str], recent: bool) -> bytes:
    names = sort_flags(set(flags) | ({"\\Recent"} if recent else set()))
    return b"(" + b" ".join(f.encode("ascii", "replace") for f in names) + b")"


def fetch_response(seq: int, data: MessageData, items: list[FetchItem], recent: bool,
                   uid_always: bool, flags_changed: bool) -> list[bytes]:
    """`* seq FETCH (...)` for one message, as pieces for writeSequence (bodies are never copied)."""
    out: list[bytes] = [b"* %d FETCH (" % seq]
    names = {i.name for i in items}
    sep = b""
    if uid_always and "UID" not in names:
        out.append(b"UID %d" % data.info.uid)
        sep = b" "
    for item in items:
        value = _value(item, data, recent)
        if isinstance(value, Streamed):
            out.append(sep + item.label() + b" {%d}\r\n" % value.size)
            out.append(value)  # type: ignore[arg-type]
        elif isinstance(value, Literal):
            out.append(sep + item.label() + b" {%d}\r\n" % len(value.value))
            out.append(value.value)
        else:
            out.append(sep + item.label() + b" " + value)
        sep = b" "
    if flags_changed and "FLAGS" not in names:
        out.append(sep + b"FLAGS " + flags_of(data.info.flags, recent))
    out.append(b")\r\n")
    return out


def _value(item: FetchItem, data: MessageData, recent: bool) -> "bytes | Literal | Streamed":
    name = item.name
    info = data.info
    if name == "UID":
        return b"%d" % info.uid
    if name == "FLAGS":
        return flags_of(info.flags, recent)
    if name == "INTERNALDATE":
        return internal_date(info.internal_date)
    if name == "RFC822.SIZE":
        return b"%d" % data.size()
    if name == "ENVELOPE":
        return _cached(data, "E", lambda: encode(envelope(data.head_root())))
    if name == "BODYSTRUCTURE":
        return _cached(data, "S", lambda: encode(bodystructure(data.root(), True)))
    if name == "BODY":
        return _cached(data, "B", lambda: encode(bodystructure(data.root(), False)))
    if name == "RFC822":
        return data.streamed() or Literal(data.full())
    if name == "RFC822.HEADER":
        return Literal(data.header())
    if name == "RFC822.TEXT":
        return Literal(data.root().body)
    section = item.section
    assert section is not None
    if not section.part and section.text in HEADER_ONLY:
        if section.text == "HEADER":
            raw: Optional[bytes] = data.header()
        else:
            raw = section_bytes(data.head_root(), (), section.text, section.fields)
    elif not section.part and not section.text:
        if item.partial is None:
            big = data.streamed()
            if big is not None:
                return big
        elif data.big_unread():
            return Literal(data.read_range(*item.partial))  # BODY[]<o.n> of a big message: seek, never read all
        raw = data.full()
    else:
        raw = section_bytes(data.root(), section.part, section.text, section.fields)
    if raw is None:
        return b"NIL"
    if item.partial is not None:
        origin, count = item.partial
        raw = raw[origin : origin + count]
    return Literal(raw)


def _cached(data: MessageData, kind: str, compute: Callable[[], bytes]) -> bytes:
    hit = data.cached.get(kind)
    if hit is not None:
        return hit
    if data.cache is None:
        return compute()
    key = (kind, data.key)
    value = data.cache.get(key)
    if value is None:
        value = compute()
        data.cache.put(key, value)
    return value


def writable(session: Any) -> "Deferred[None]":
    """Fires when the transport wants data again (the session is its push producer)."""
    d: Deferred[None] = Deferred()

    def resume() -> None:
        if not d.called:
            d.callback(None)

    session.resume_hooks.append(resume)
    return d


def next_turn(session: Any) -> "Deferred[None]":
    """Fires on the next reactor turn (so one long FETCH never starves other connections)."""
    d: Deferred[None] = Deferred()
    session.reactor.callLater(0, d.callback, None)
    return d


async def write_pieces(session: Any, pieces: list[Any]) -> None:
    """Write bytes pieces; a Streamed body is read in chunks in the store's pool while the transport accepts data."""
    batch: list[bytes] = []
    for piece in pieces:
        if not isinstance(piece, Streamed):
            batch.append(piece)
            continue
        if batch:
            session.send_pieces(batch)
            batch = []
        offset, size = 0, piece.size
        while offset < size and not session.closing:
            if session.write_paused:
                await writable(session)
                continue
            chunk = await piece.file.read(offset, min(READ_CHUNK, size - offset))
            if not chunk:
                chunk = b" " * (size - offset)  # the file shrank under us: keep the literal's length honest
            view = memoryview(chunk)
            for start in range(0, len(chunk), CHUNK):
                if session.write_paused and not session.closing:
                    await writable(session)
                session.send(bytes(view[start : start + CHUNK]) if len(chunk) > CHUNK else chunk)
            offset += len(chunk)
    if batch:
        session.send_pieces(batch)


BATCH_BYTES = 4 * 1024 * 1024  # bodies read ahead per batch (two batches are in memory at most)


def batches(datas: "list[tuple[int, MessageData, Need]]", count: int) -> "Iterable[list[tuple[int, MessageData, Need]]]":
    """Consecutive runs of at most `count` messages and about BATCH_BYTES of bodies to read ahead."""
    run: list[tuple[int, MessageData, Need]] = []
    weight = 0
    for entry in datas:
        need = entry[2]
        size = entry[1].info.size if need.body and (need.full or entry[1].info.size <= STREAM_THRESHOLD) else 0
        if run and (len(run) >= count or weight + size > BATCH_BYTES):
            yield run
            run, weight = [], 0
        run.append(entry)
        weight += size
    if run:
        yield run


async def fetch_loop(session: Any, folder: IFolder, work: "list[tuple[int, MessageData, Need]]",
                     respond: Callable[[int, MessageData], list[Any]], batch: int,
                     ahead: "Optional[ReadAhead]" = None, extra: "Optional[list[int]]" = None) -> bool:
    """Load, answer and write message after message; the next batch is read while this one is written.

    Returns True if some message could not be answered (expunged meanwhile, or unreadable).
    """
    missing = False
    pending: list[bytes] = []
    size = 0
    runs = list(batches(work, batch))
    loading = load_batch(folder, [(d, n) for _, d, n in runs[0]], ahead, extra) if runs else None
    try:
        for i, run in enumerate(runs):
            assert loading is not None
            await loading
            loading = load_batch(folder, [(d, n) for _, d, n in runs[i + 1]], ahead) if i + 1 < len(runs) else None
            started = time.monotonic()
            for seq, data, _ in run:
                if session.closing:
                    return missing
                if time.monotonic() - started >= SLICE:
                    # one BODYSTRUCTURE of a big message can cost more than a batch of cheap ones:
                    # yield a reactor turn every pacing.SLICE (issue 12, no stall over 100 ms)
                    if pending:
                        session.send_pieces(pending)
                        pending, size = [], 0
                    await next_turn(session)
                    started = time.monotonic()
                    if session.closing:
                        return missing
                if data.missing:
                    missing = True
                    continue
                try:
                    pieces = respond(seq, data)
                except Exception:
                    log.failure("fetch of uid {uid} failed", uid=data.info.uid, event="imap.fetch_error")
                    missing = True
                    continue
                if any(isinstance(p, Streamed) for p in pieces):
                    if pending:
                        session.send_pieces(pending)
                        pending, size = [], 0
                    await write_pieces(session, pieces)
                else:
                    # Small answers are gathered into one write of about COALESCE octets:
                    # fewer, larger TLS records and transport calls.
                    pending += pieces
                    size += sum(len(p) for p in pieces)
                    if size < COALESCE:
                        data.close()
                        continue
                    session.send_pieces(pending)
                    pending, size = [], 0
                data.close()
                if session.write_paused and not session.closing:
                    await writable(session)
            if pending and not session.closing:
                session.send_pieces(pending)
                pending, size = [], 0
            runs[i] = []  # answered: nothing of this batch stays referenced
            if loading is not None:
                await next_turn(session)
    finally:
        for run in runs:
            for _, data, _ in run:
                data.close()
        if loading is not None:
            loading.addErrback(lambda f: None)  # abandoned read-ahead: nothing waits for it
    return missing
