"""FETCH: data items of one message (RFC 3501 §6.4.5, §7.4.2) and the write-paced loop over a set.

With `fast_message_retrieval`, FLAGS, RFC822.SIZE, INTERNALDATE come from the index and
ENVELOPE / BODY.PEEK[HEADER...] / RFC822.HEADER from `IFolder.headers`, so header-first
clients never make the store open message files; otherwise everything is computed from the file.
Store reads are asynchronous: each batch's headers and bodies are loaded (one job each) before its
responses are built, and big bodies stream from the opened file chunk by chunk, paced by the
transport (docs/imap.md).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable, Optional

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from mailgw.imap.envelope import bodystructure, envelope
from mailgw.imap.mime import Part, parse_message, section_bytes
from mailgw.imap.wire.fetchspec import FetchItem
from mailgw.imap.wire.response import Literal, encode, internal_date, sort_flags
from mailgw.interfaces import IFolder, IMessageBody, MessageInfo

log = Logger()

HEADER_ONLY = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
STREAM_THRESHOLD = 1024 * 1024  # whole messages above this are streamed from the file, CHUNK at a time
CHUNK = 64 * 1024  # one transport write
READ_CHUNK = 256 * 1024  # one read job in the store's pool


class Streamed:
    """A whole-message literal to be copied from the opened body (the `{n}` prefix is already written)."""

    def __init__(self, file: IMessageBody, size: int) -> None:
        self.file, self.size = file, size


def flags_of(flags: Iterable[str], recent: bool) -> bytes:
    names = sort_flags(set(flags) | ({"\\Recent"} if recent else set()))
    return b"(" + b" ".join(f.encode("ascii", "replace") for f in names) + b")"


class FetchCache:
    """LRU of serialised ENVELOPE / BODYSTRUCTURE values; a (user, folder, UIDVALIDITY, UID) never changes content."""

    MAX_VALUE = 16 * 1024  # a hostile message's 10,000-address ENVELOPE is recomputed, never cached

    def __init__(self, size: int = 20000, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.size, self.max_bytes = size, max_bytes
        self.bytes = 0
        self._data: "OrderedDict[Hashable, bytes]" = OrderedDict()

    def get(self, key: Hashable) -> Optional[bytes]:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.MAX_VALUE or key in self._data:
            return
        self._data[key] = value
        self.bytes += len(value)
        while len(self._data) > self.size or self.bytes > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self.bytes -= len(old)


class NotLoaded(Exception):
    """A FETCH/SEARCH item asked for data its plan did not load (a bug in the plan, reported as a failed message)."""


class MessageData:
    """One message's data for FETCH and SEARCH. The store reads asynchronously (IFolder returns
    Deferreds), so `load()` / `load_batch()` fetch what the items need first; the item code
    below then runs synchronously on what was loaded and never touches the store."""

    def __init__(self, folder: IFolder, info: MessageInfo, fast: bool, cache: Optional[FetchCache] = None,
                 owner: str = "") -> None:
        self.folder, self.info, self.fast = folder, info, fast
        self.cache = cache
        self.key = (owner, folder.name, folder.uid_validity, info.uid)
        self.body: Optional[IMessageBody] = None
        self.missing = False  # the message was gone when its data was loaded
        self.cached: dict[str, bytes] = {}  # cache hits taken when the plan was made
        self.ranges: dict[tuple[int, int], bytes] = {}  # BODY[]<o.n> of a big message, read ahead
        self._full: Optional[bytes] = None
        self._header: Optional[bytes] = None
        self._root: Optional[Part] = None
        self._head_root: Optional[Part] = None

    def full(self) -> bytes:
        if self._full is None:
            raise NotLoaded(f"body of uid {self.info.uid}")
        return self._full

    def header(self) -> bytes:
        if self._full is None and self.fast:
            if self._header is None:
                raise NotLoaded(f"header of uid {self.info.uid}")
            return self._header
        return self.root().header

    def root(self) -> Part:
        if self._root is None:
            self._root = parse_message(self.full())
        return self._root

    def head_root(self) -> Part:
        """A tree of the header alone (enough for ENVELOPE)."""
        if self._root is not None or not self.fast or self._header is None and self._full is not None:
            return self.root()
        if self._head_root is None:
            self._head_root = parse_message(self.header())
        return self._head_root

    def size(self) -> int:
        return self.info.size if self.fast else len(self.full())

    def big_unread(self) -> bool:
        return self._full is None and self.body is not None and self.body.size > STREAM_THRESHOLD

    def read_range(self, origin: int, count: int) -> bytes:
        return self.ranges[(origin, count)]

    def streamed(self) -> Optional[Streamed]:
        """The open body of a big message not read whole, with its real length; None otherwise."""
        if not self.big_unread():
            return None
        assert self.body is not None
        return Streamed(self.body, self.body.size)

    def load(self, header: bool, full: bool, partials: tuple[tuple[int, int], ...] = (),
             body: bool = False) -> "Deferred[MessageData]":
        """Load what a per-message loop needs (header block, whole body, ranges); sets `missing` if the message is gone."""
        return load_batch(self.folder, [(self, Need(header, full, body or full or bool(partials), partials))]).addCallback(
            lambda _: self)

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None


class Need:
    """What one message's items need loaded: the header block, the whole body, an open body, ranges."""

    __slots__ = ("header", "full", "body", "partials")

    def __init__(self, header: bool = False, full: bool = False, body: bool = False,
                 partials: tuple[tuple[int, int], ...] = ()) -> None:
        self.header, self.full, self.body, self.partials = header, full, body, partials


_FREE = frozenset({"UID", "FLAGS", "INTERNALDATE"})


def plan(data: MessageData, items: list[FetchItem]) -> Need:
    """What `items` need of one message (taking cache hits for ENVELOPE/BODYSTRUCTURE now)."""
    need = Need()
    fast = data.fast
    for item in items:
        name = item.name
        if name in _FREE or (name == "RFC822.SIZE" and fast):
            continue
        if not fast:
            need.full = True
            continue
        if name in ("ENVELOPE", "BODYSTRUCTURE", "BODY") and data.cache is not None:
            kind = {"ENVELOPE": "E", "BODYSTRUCTURE": "S", "BODY": "B"}[name]
            hit = data.cache.get((kind, data.key))
            if hit is not None:
                data.cached[kind] = hit
                continue
        if name in ("ENVELOPE", "RFC822.HEADER"):
            need.header = True
        elif name == "RFC822":
            need.body = True
        elif name in ("BODYSTRUCTURE", "BODY", "RFC822.TEXT"):
            need.full = True
        else:
            section = item.section
            assert section is not None
            if not section.part and section.text in HEADER_ONLY:
                need.header = True
            elif not section.part and not section.text:
                need.body = True  # BODY[] whole or partial: streamed or ranged when big
                if item.partial is not None:
                    need.partials += (item.partial,)
            else:
                need.full = True
    if need.full:
        need.body = True
    return need


async def _load_batch(folder: IFolder, work: "list[tuple[MessageData, Need]]") -> None:
    want_headers = [d.info.uid for d, n in work if n.header and not n.full]
    want_bodies = [d.info.uid for d, n in work if n.body]
    headers_d = folder.headers(want_headers) if want_headers else None
    bodies_d = folder.open_messages(want_bodies) if want_bodies else None
    headers = (await headers_d) if headers_d is not None else {}
    bodies = (await bodies_d) if bodies_d is not None else {}
    for data, need in work:
        uid = data.info.uid
        if need.header and not need.full:
            data._header = headers.get(uid)
            data.missing = data.missing or data._header is None
        if not need.body:
            continue
        body = bodies.get(uid)
        if body is None:
            data.missing = True
            continue
        data.body = body
        if need.full or body.size <= STREAM_THRESHOLD:
            data._full = await body.read_all()  # already in memory unless it is big
        else:
            for origin, count in need.partials:
                data.ranges[(origin, count)] = await body.read(origin, count)


def load_batch(folder: IFolder, work: "list[tuple[MessageData, Need]]") -> "Deferred[None]":
    """Load several messages' needs with one header job and one open job (the store's pool does the reading)."""
    return ensureDeferred(_load_batch(folder, work))


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
    session.resume_hooks.append(lambda: d.called or d.callback(None))
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
                     respond: Callable[[int, MessageData], list[Any]], batch: int) -> bool:
    """Load, answer and write message after message; the next batch is read while this one is written.

    Returns True if some message could not be answered (expunged meanwhile, or unreadable).
    """
    missing = False
    runs = list(batches(work, batch))
    loading = load_batch(folder, [(d, n) for _, d, n in runs[0]]) if runs else None
    try:
        for i, run in enumerate(runs):
            assert loading is not None
            await loading
            loading = load_batch(folder, [(d, n) for _, d, n in runs[i + 1]]) if i + 1 < len(runs) else None
            for seq, data, _ in run:
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
                await write_pieces(session, pieces)
                data.close()
                if session.write_paused and not session.closing:
                    await writable(session)
            if loading is not None:
                await next_turn(session)
    finally:
        for run in runs:
            for _, data, _ in run:
                data.close()
        if loading is not None:
            loading.addErrback(lambda f: None)  # abandoned read-ahead: nothing waits for it
    return missing
