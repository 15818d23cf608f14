"""FETCH: data items of one message (RFC 3501 §6.4.5, §7.4.2) and the write-paced loop over a set.

With `fast_message_retrieval`, FLAGS, RFC822.SIZE, INTERNALDATE come from the index and
ENVELOPE / BODY.PEEK[HEADER...] / RFC822.HEADER from `IFolder.header_bytes`, so header-first
clients never make the store open message files; otherwise everything is computed from the file.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable, Optional

from mailgw.imap.envelope import bodystructure, envelope
from mailgw.imap.mime import Part, parse_message, section_bytes
from mailgw.imap.pacing import SLICE
from mailgw.imap.wire.fetchspec import FetchItem
from mailgw.imap.wire.response import Literal, encode, internal_date, sort_flags
from mailgw.interfaces import IFolder, MessageInfo

HEADER_ONLY = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
STREAM_THRESHOLD = 1024 * 1024  # whole messages above this are streamed from the file, 64 KiB at a time
CHUNK = 64 * 1024


class Streamed:
    """A whole-message literal to be copied from the stored file (the `{n}` prefix is already written)."""

    def __init__(self, file: Any, size: int) -> None:
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


class MessageData:
    """Lazy access to one message: header bytes, full bytes, parsed trees (each read at most once)."""

    def __init__(self, folder: IFolder, info: MessageInfo, fast: bool, cache: Optional[FetchCache] = None,
                 owner: str = "", view: Any = None) -> None:
        self.folder, self.info, self.fast = folder, info, fast
        self.cache = cache
        # view: the calendaring Presentation of this server (mailgw.imap.calendaring), None: as stored
        self.view = view
        self.key = (owner, folder.name, folder.uid_validity, info.uid) + ((view.fingerprint,) if view else ())
        self._full: Optional[bytes] = None
        self._header: Optional[bytes] = None
        self._root: Optional[Part] = None
        self._head_root: Optional[Part] = None

    def _open(self) -> Any:
        f = self.folder.open_message(self.info.uid)
        return f if self.view is None else self.view.open(self, f)

    def full(self) -> bytes:
        if self._full is None:
            f = self._open()
            try:
                self._full = f.read()
            finally:
                f.close()
        return self._full

    def header(self) -> bytes:
        if self._full is None and self.fast:
            if self._header is None:
                self._header = self.folder.header_bytes(self.info.uid)
                if self.view is not None:
                    self._header = self.view.header(self, self._header)
            return self._header
        return self.root().header

    def root(self) -> Part:
        if self._root is None:
            self._root = parse_message(self.full())
        return self._root

    def head_root(self) -> Part:
        """A tree of the header alone (enough for ENVELOPE)."""
        if self._root is not None or not self.fast:
            return self.root()
        if self._head_root is None:
            self._head_root = parse_message(self.header())
        return self._head_root

    def size(self) -> int:
        if not self.fast:
            return len(self.full())
        return self.info.size if self.view is None else self.view.size(self)

    def big_unread(self) -> bool:
        return self._full is None and self.info.size > STREAM_THRESHOLD

    def read_range(self, origin: int, count: int) -> bytes:
        f = self._open()
        try:
            f.seek(origin)
            return f.read(count)
        finally:
            f.close()

    def streamed(self) -> Optional[Streamed]:
        """The open file of a big message not yet read, with its real length; None for small ones."""
        if self._full is not None or self.info.size <= STREAM_THRESHOLD:
            return None
        f = self._open()
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        return Streamed(f, size)


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
    if data.cache is None:
        return compute()
    key = (kind, data.key)
    value = data.cache.get(key)
    if value is None:
        value = compute()
        data.cache.put(key, value)
    return value


def write_pieces(session: Any, pieces: list[Any], done: Callable[[], None]) -> None:
    """Write bytes pieces; a Streamed piece is copied from its file while the transport accepts data."""
    queue = list(pieces)

    def run() -> None:
        while queue and not session.closing:
            if not isinstance(queue[0], Streamed):
                batch = []
                while queue and not isinstance(queue[0], Streamed):
                    batch.append(queue.pop(0))
                session.send_pieces(batch)
                continue
            stream = queue[0]
            while stream.size > 0 and not session.closing:
                if session.write_paused:
                    session.resume_hooks.append(run)
                    return
                chunk = stream.file.read(min(CHUNK, stream.size))
                if not chunk:
                    chunk = b" " * stream.size  # the file shrank under us: keep the literal's length honest
                session.send(chunk)
                stream.size -= len(chunk)
            stream.file.close()
            queue.pop(0)
        for piece in queue:
            if isinstance(piece, Streamed):
                piece.file.close()
        if not session.closing:
            done()

    run()


def paced_loop(session: Any, work: Iterable[Any], step: Callable[[Any], Optional[list[Any]]],
               finished: Callable[[], None], batch: int) -> None:
    """Run `step` over `work`, writing what it returns; stops whenever the transport's write buffer is full
    (push-producer backpressure) and yields to the reactor every `batch` items or pacing.SLICE seconds
    (one BODYSTRUCTURE of a big message can cost more than 200 cheap ones)."""
    it = iter(work)

    def run() -> None:
        count = 0
        started = time.monotonic()
        while not session.closing:
            if session.write_paused:
                session.resume_hooks.append(run)
                return
            if count >= batch or (count and time.monotonic() - started >= SLICE):
                session.reactor.callLater(0, run)
                return
            try:
                item = next(it)
            except StopIteration:
                finished()
                return
            pieces = step(item)
            count += 1
            if pieces:
                if any(isinstance(p, Streamed) for p in pieces):
                    write_pieces(session, pieces, run)
                    return
                session.send_pieces(pieces)

    run()
