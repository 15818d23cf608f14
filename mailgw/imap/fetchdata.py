"""The data of messages under FETCH/SEARCH: what the items need (plan), loading it from the store, read-ahead.

The store's reads are asynchronous (IFolder.headers / open_messages, IMessageBody.read). This
module loads each batch's header blocks and bodies with one job each, so the item code in
fetch.py and search.py can then run synchronously on what was loaded.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Optional

from twisted.internet.defer import Deferred, ensureDeferred

from mailgw.imap.mime import Part, parse_message
from mailgw.imap.wire.fetchspec import FetchItem
from mailgw.interfaces import IFolder, IMessageBody, MessageInfo

HEADER_ONLY = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
STREAM_THRESHOLD = 1024 * 1024  # whole messages above this are streamed from the file, never read whole


class Streamed:
    """A whole-message literal to be copied from the opened body (the `{n}` prefix is already written)."""

    def __init__(self, file: IMessageBody, size: int) -> None:
        self.file, self.size = file, size


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
                 owner: str = "", view: Any = None) -> None:
        self.folder, self.info, self.fast = folder, info, fast
        self.cache = cache
        # view: the calendaring Presentation of this server (mailgw.imap.calendaring), None: as stored;
        # load_batch sets `recipe` when the message is shown presented
        self.view = view
        self.recipe: Any = None
        self.key = (owner, folder.name, folder.uid_validity, info.uid) + ((view.fingerprint,) if view else ())
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
        if not self.fast:
            return len(self.full())
        return self.info.size if self.recipe is None else int(self.recipe.size(self.info.size))

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
        """Release the body and everything loaded or parsed: a long FETCH holds only its current batches."""
        if self.body is not None:
            self.body.close()
            self.body = None
        self._full = self._header = None
        self._root = self._head_root = None
        self.ranges.clear()


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


async def _present(folder: IFolder, work: "list[tuple[MessageData, Need]]") -> "dict[int, IMessageBody]":
    """Calendaring: set each message's recipe, deciding the undecided ones from their stored header and
    first octets (read in the store's pool; the decision is cached per message and configuration).
    Returns the bodies it opened, for the loader to use rather than open them twice."""
    from mailgw.imap.calendaring.present import EXAMINE, is_candidate

    undecided = []
    for data, _ in work:
        if data.view is None:
            continue
        decided, data.recipe = data.view.known(data)
        if not decided:
            undecided.append(data)
    if not undecided:
        return {}
    headers = await folder.headers([d.info.uid for d in undecided])
    candidates = [d for d in undecided if d.info.uid in headers and is_candidate(headers[d.info.uid])]
    bodies = await folder.open_messages([d.info.uid for d in candidates]) if candidates else {}
    for data in undecided:
        header = headers.get(data.info.uid)
        if header is None:
            continue  # expunged meanwhile: the loader below notices
        body = bodies.get(data.info.uid)
        prefix = await body.read(0, EXAMINE + 1) if body is not None else None
        data.recipe = data.view.decide(data, header, prefix)
    return bodies


async def _load_batch(folder: IFolder, work: "list[tuple[MessageData, Need]]",
                      ahead: "Optional[ReadAhead]", extra: "list[int]") -> None:
    opened = await _present(folder, work)
    want_headers = [d.info.uid for d, n in work if n.header and not n.full]
    bodies: dict[int, IMessageBody] = {}
    for d, n in work:
        body = opened.pop(d.info.uid, None)
        if body is not None and n.body:
            bodies[d.info.uid] = body
        elif body is not None:
            body.close()
    if ahead is not None:
        for d, n in work:
            body = ahead.take(d.info.uid) if n.body and d.info.uid not in bodies else None
            if body is not None:
                bodies[d.info.uid] = body
    want_bodies = [d.info.uid for d, n in work if n.body and d.info.uid not in bodies] + extra
    headers_d = folder.headers(want_headers) if want_headers else None
    bodies_d = folder.open_messages(want_bodies) if want_bodies else None
    headers = (await headers_d) if headers_d is not None else {}
    if bodies_d is not None:
        bodies.update(await bodies_d)
    if ahead is not None:
        ahead.keep({u: bodies.pop(u) for u in extra if u in bodies})
    for data, need in work:
        uid = data.info.uid
        if need.header and not need.full:
            data._header = headers.get(uid)
            data.missing = data.missing or data._header is None
            if data.recipe is not None and data._header is not None:
                data._header = data.recipe.header
        if not need.body:
            continue
        body = bodies.get(uid)
        if body is None:
            data.missing = True
            continue
        if data.recipe is not None:
            from mailgw.imap.calendaring.present import PresentedBody
            body = PresentedBody(body, data.recipe)
        data.body = body
        if need.full or body.size <= STREAM_THRESHOLD:
            data._full = await body.read_all()  # already in memory unless it is big
        else:
            for origin, count in need.partials:
                data.ranges[(origin, count)] = await body.read(origin, count)


def load_batch(folder: IFolder, work: "list[tuple[MessageData, Need]]", ahead: "Optional[ReadAhead]" = None,
               extra: "Optional[list[int]]" = None) -> "Deferred[None]":
    """Load several messages' needs with one header job and one open job (the store's pool does the reading).

    With `ahead`, bodies read ahead earlier are used, and the `extra` uids are opened in the same
    job and kept there for the commands to come.
    """
    return ensureDeferred(_load_batch(folder, work, ahead, extra or []))


class ReadAhead:
    """Small bodies opened ahead for a client that pipelines one FETCH per message (mbsync).

    Each store job costs two thread hand-offs, which dominate a 30 KB message; opening the next
    messages with the one asked for makes that one job per READ_AHEAD messages. Bounded
    (count, bytes, small messages only, so no file stays open) and dropped when the pipeline
    runs dry or the session selects another folder. Message contents never change, so a body
    read ahead is as good as one opened later.
    """

    COUNT = 32
    BYTES = 2 * 1024 * 1024
    MAX_MESSAGE = 256 * 1024

    def __init__(self, folder: IFolder) -> None:
        self.folder = folder
        self.bodies: "OrderedDict[int, IMessageBody]" = OrderedDict()

    def take(self, uid: int) -> Optional[IMessageBody]:
        return self.bodies.pop(uid, None)

    def keep(self, bodies: "dict[int, IMessageBody]") -> None:
        self.bodies.update(bodies)
        while len(self.bodies) > self.COUNT:
            self.bodies.popitem(last=False)[1].close()

    def candidates(self, following: "list[MessageInfo]") -> list[int]:
        """Uids worth opening ahead among the messages that follow (in sequence order)."""
        out: list[int] = []
        total = 0
        for info in following:
            if len(out) >= self.COUNT or info.size > self.MAX_MESSAGE or total + info.size > self.BYTES:
                break
            if info.uid not in self.bodies:
                out.append(info.uid)
                total += info.size
        return out

    def clear(self) -> None:
        for body in self.bodies.values():
            body.close()
        self.bodies.clear()

