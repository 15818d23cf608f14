"""The durable relay queue: spool files, envelopes, and the fsync order that makes a 250 a promise.

Layout under the queue directory::

    tmp/          messages being received (a crash leaves only these; cleared at start)
    data/<id>     the message as relayed (CRLF, Received header first)
    env/<id>.json the envelope; its presence (after the directory fsync) is the commit point

Commit order (RFC 5321 §6.1, security.md H39): data fsync -> rename into data/ -> envelope
written and fsynced -> rename into env/ -> fsync of both directories -> only then the 250.
Every fsync runs in the given thread pool, never on the reactor thread.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Callable, Container, Optional

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailgw import files
from mailgw.errors import StorageUnavailable
from mailgw.interfaces import IRelayQueue

log = Logger()


@dataclass
class QueueEntry:
    """One queued message: the recipients still to be delivered and its retry state."""

    id: str
    sender: str
    recipients: list[str]
    created: float
    size: int = 0
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    user: str = ""  # the authenticated submitter (logs and DSNs only)
    dsn: bool = False  # this message is itself a bounce: never bounce it again
    smtputf8: bool = False  # submitted with MAIL ... SMTPUTF8 (RFC 6531)
    eight_bit: bool = False  # submitted with BODY=8BITMIME
    bounced: list[str] = field(default_factory=list)  # permanently failed, DSN pending

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "QueueEntry":
        data = json.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def iso8601(when: float) -> str:
    """A time as operators read it (ISO 8601 / RFC 3339, UTC, whole seconds): 2026-12-08T01:02:03Z."""
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_queue_id() -> str:
    """Sortable by arrival time, unguessable, filename-safe."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"


class Spool:
    """A message being received: written to tmp/ as DATA streams in, never held in memory."""

    def __init__(self, queue: "RelayQueue", path: str, fh: IO[bytes]) -> None:
        self.queue = queue
        self.path = path
        self._fh: Optional[IO[bytes]] = fh
        self.size = 0

    @property
    def id(self) -> str:
        """The queue id this message keeps from DATA on: its Received header, the 250, the logs, `queue list`."""
        return os.path.basename(self.path)

    def write(self, chunk: bytes) -> None:
        assert self._fh is not None
        self._fh.write(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def abort(self) -> None:
        """Drop the message: nothing of it stays on disk."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@implementer(IRelayQueue)
class RelayQueue:
    """The queue directory plus an in-memory index of its envelopes."""

    def __init__(self, directory: str, reactor: Any, pool: ThreadPool, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.reactor = reactor
        self.pool = pool
        self.clock = clock
        self.tmp_dir = os.path.join(directory, "tmp")
        self.data_dir = os.path.join(directory, "data")
        self.env_dir = os.path.join(directory, "env")
        self.index: dict[str, QueueEntry] = {}
        self.on_enqueue: Optional[Callable[[QueueEntry], None]] = None  # the relay runner's wake-up
        self.on_flush: Optional[Callable[[], None]] = None
        for d in (self.tmp_dir, self.data_dir, self.env_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.recover()

    # ----------------------------------------------------------------- start-up

    def recover(self) -> None:
        """Load committed envelopes; remove what was never acknowledged (tmp files, data without envelope)."""
        for name in os.listdir(self.tmp_dir):
            os.unlink(os.path.join(self.tmp_dir, name))
        self.index = {}
        for entry in scan_entries(self.directory):
            self.index[entry.id] = entry
        for name in os.listdir(self.data_dir):
            if name not in self.index:
                log.warn("queue dropping unacknowledged data {id}", id=name, event="queue.orphan")
                os.unlink(os.path.join(self.data_dir, name))

    def recover_index(self) -> None:
        """Re-read the envelopes (after mailgwctl changed them) without touching messages in flight."""
        self.adopt_index(scan_entries(self.directory))

    def adopt_index(self, entries: list[QueueEntry], known: Optional[Container[str]] = None) -> None:
        """Take a fresh scan (made in a pool thread: a big queue is many file reads) as the index.

        Only ids in `known` (the index when the scan started) may be dropped: a message committed
        while the scan ran is not in it, and must stay.
        """
        fresh = {e.id: e for e in entries}
        for queue_id in list(self.index):
            if queue_id not in fresh and (known is None or queue_id in known):
                del self.index[queue_id]
        for queue_id, entry in fresh.items():
            self.index.setdefault(queue_id, entry)
        self.index = dict(sorted(self.index.items()))

    # ----------------------------------------------------------------- receiving

    def open_spool(self) -> Spool:
        path = os.path.join(self.tmp_dir, new_queue_id())
        fh = open(path, "xb")
        return Spool(self, path, fh)

    def open_spool_async(self) -> "Deferred[Spool]":
        """open_spool in the pool: creating a file can wait on the journal behind other fsyncs."""
        return deferToThreadPool(self.reactor, self.pool, self.open_spool)

    def commit(self, spool: Spool, sender: str, recipients: list[str], user: str = "", dsn: bool = False,
               smtputf8: bool = False, eight_bit: bool = False) -> "Deferred[str]":
        """Make the spooled message durable for `recipients`; fires with the queue id."""
        spool.close()
        entry = QueueEntry(spool.id, sender, list(recipients), self.clock(), spool.size, user=user, dsn=dsn,
                           smtputf8=smtputf8, eight_bit=eight_bit)
        d = deferToThreadPool(self.reactor, self.pool, self._commit_sync, spool.path, entry)
        done: Deferred[str] = d.addCallback(self._committed)
        done.addErrback(self._failed, spool)
        return done

    def _commit_sync(self, spool_path: str, entry: QueueEntry) -> QueueEntry:
        with open(spool_path, "rb+") as f:
            os.fsync(f.fileno())
        data_path = os.path.join(self.data_dir, entry.id)
        os.link(spool_path, data_path)  # link, not rename: fails on a collision instead of replacing
        os.unlink(spool_path)
        tmp_env = os.path.join(self.tmp_dir, entry.id + ".json")
        # The directories are fsynced once below, for the data link and the envelope rename together.
        files.durable_replace(self._env_path(entry.id), entry.to_json(), tmp=tmp_env, sync_directory=False)
        files.fsync_directory(self.data_dir)
        files.fsync_directory(self.env_dir)
        return entry

    def _committed(self, entry: QueueEntry) -> str:
        self.index[entry.id] = entry
        log.info("queued {id} from {sender} to {count} recipient(s), {size} octets",
                 id=entry.id, sender=entry.sender, count=len(entry.recipients), size=entry.size, event="queue.enqueued")
        if self.on_enqueue is not None:
            self.on_enqueue(entry)
        return entry.id

    def _failed(self, failure: Any, spool: Spool) -> None:
        spool.abort()
        err = failure.value
        log.error("storage_error op=queue_commit errno={errno}: {err}", errno=getattr(err, "errno", None),
                  err=str(err), event="storage_error")
        raise StorageUnavailable(detail=str(err))

    def enqueue(self, sender: str, recipients: list[str], message: bytes, dsn: bool = False) -> "Deferred[str]":
        """Queue a whole message (a DSN): the file is created and written in the pool, never on the reactor."""
        def spool_bytes() -> Spool:
            spool = self.open_spool()
            spool.write(message)
            return spool

        d: Deferred[Spool] = deferToThreadPool(self.reactor, self.pool, spool_bytes)
        return d.addCallback(lambda spool: self.commit(spool, sender, recipients, dsn=dsn))

    # ----------------------------------------------------------------- relay runner side

    def _env_path(self, queue_id: str) -> str:
        return os.path.join(self.env_dir, queue_id + ".json")

    def data_path(self, queue_id: str) -> str:
        return os.path.join(self.data_dir, queue_id)

    def exists(self, queue_id: str) -> bool:
        return os.path.exists(self._env_path(queue_id))

    def due(self, now: float, limit: Optional[int] = None, skip: Container[str] = ()) -> list[QueueEntry]:
        """Entries whose next attempt has come, oldest first (the index is kept in arrival order)."""
        out: list[QueueEntry] = []
        for e in self.index.values():
            if e.next_attempt <= now and e.id not in skip:
                out.append(e)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def update(self, entry: QueueEntry) -> "Deferred[None]":
        """Durably rewrite an envelope after an attempt (fewer recipients, new retry time)."""
        tmp = os.path.join(self.tmp_dir, entry.id + ".json")

        def sync() -> None:
            if not os.path.exists(self._env_path(entry.id)):
                return  # deleted meanwhile (mailgwctl queue delete)
            files.durable_replace(self._env_path(entry.id), entry.to_json(), tmp=tmp)

        return deferToThreadPool(self.reactor, self.pool, sync)

    def remove(self, queue_id: str) -> "Deferred[None]":
        """Forget a finished message: envelope first (the commit point), then its data."""
        self.index.pop(queue_id, None)
        d: Deferred[bool] = deferToThreadPool(self.reactor, self.pool, remove_files, self.directory, queue_id)
        return d.addCallback(lambda _: None)

    # ----------------------------------------------------------------- admin (IRelayQueue)

    def entries(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [entry_summary(e, now) for e in sorted(self.index.values(), key=lambda e: e.id)]

    def flush(self) -> None:
        for entry in self.index.values():
            entry.next_attempt = 0.0
        if self.on_flush is not None:
            self.on_flush()

    def delete(self, queue_id: str) -> bool:
        """Forget a message now; its files go in the pool thread (the reactor never fsyncs)."""
        if not queue_id or "/" in queue_id or queue_id.startswith("."):
            return False
        known = self.index.pop(queue_id, None) is not None or self.exists(queue_id)
        d = deferToThreadPool(self.reactor, self.pool, remove_files, self.directory, queue_id)
        d.addErrback(lambda f: log.failure("queue delete {id}", f, id=queue_id, event="queue.delete_failed"))
        return known


# --------------------------------------------------------------------------- offline helpers (mailgwctl)


def scan_entries(directory: str) -> list[QueueEntry]:
    """Read every committed envelope (skipping unreadable ones, which are logged)."""
    env_dir = os.path.join(directory, "env")
    out: list[QueueEntry] = []
    try:
        names = sorted(os.listdir(env_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(env_dir, name), "rb") as f:
                out.append(QueueEntry.from_json(f.read()))
        except (OSError, ValueError, TypeError) as e:
            log.error("queue envelope {name} unreadable: {err}", name=name, err=str(e), event="queue.corrupt")
    return out


def remove_files(directory: str, queue_id: str) -> bool:
    if not queue_id or "/" in queue_id or queue_id.startswith("."):
        return False
    found = False
    for path in (os.path.join(directory, "env", queue_id + ".json"), os.path.join(directory, "data", queue_id)):
        try:
            os.unlink(path)
            found = True
        except FileNotFoundError:
            pass
    files.fsync_directory(os.path.join(directory, "env"))
    return found


def entry_summary(e: QueueEntry, now: float) -> dict[str, Any]:
    return {
        "id": e.id,
        "sender": e.sender,
        "recipients": list(e.recipients),
        "size": e.size,
        "age": max(0.0, now - e.created),
        "attempts": e.attempts,
        "next_attempt": e.next_attempt,
        "next_attempt_at": iso8601(e.next_attempt) if e.next_attempt else "",
        "last_error": e.last_error,
    }


def request_flush(directory: str) -> None:
    """Ask a running gateway to retry everything now (the runner polls for this file)."""
    path = os.path.join(directory, "flush")
    with open(path, "wb"):
        pass
