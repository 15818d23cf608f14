"""The queue runner: relays queued mail to the smarthost (or the store), retries 4xx with backoff, bounces 5xx.

A recipient leaves the queue only after a 2xx (delivered), or a 5xx / the maximum queue age
(then a DSN, RFC 3464, goes to the sender unless the message is itself a bounce). The
envelope is rewritten durably after every attempt, so a restart resumes where it stopped.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailgw.errors import MailError
from mailgw.observe import metrics
from mailgw.smtp.client import DeliveryResult, Job, SmarthostConfig, deliver_batch
from mailgw.smtp.dsn import build_dsn, original_headers
from mailgw.smtp.local import LocalDelivery
from mailgw.smtp.queue import QueueEntry, RelayQueue, iso8601, scan_entries

log = Logger()

DEFAULT_BACKOFF = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
DeliverFn = Callable[..., "defer.Deferred[list[DeliveryResult]]"]


class RelayRunner:
    """Polls the queue and runs at most `concurrency` delivery attempts at once."""

    def __init__(self, queue: RelayQueue, reactor: Any, hostname: str, is_local: Callable[[str], bool],
                 local: Optional[LocalDelivery], smarthost: Optional[SmarthostConfig],
                 max_queue_age: float = 5 * 86400.0, backoff: tuple[float, ...] = DEFAULT_BACKOFF,
                 concurrency: int = 4, poll_interval: float = 5.0, deliver_fn: DeliverFn = deliver_batch,
                 batch_size: int = 20, name: str = "smarthost") -> None:
        self.queue, self.reactor, self.hostname = queue, reactor, hostname
        self.is_local, self.local, self.smarthost = is_local, local, smarthost
        self.max_queue_age, self.backoff = max_queue_age, backoff
        self.concurrency, self.poll_interval = concurrency, poll_interval
        self.deliver_fn = deliver_fn
        self.batch_size = batch_size  # messages per smarthost session
        self.name = name
        self.running_batches = 0
        self.in_flight: dict[str, defer.Deferred[None]] = {}
        self._loop: Optional[LoopingCall] = None
        self._wake_pending = False
        self._flush_check: Optional[defer.Deferred[Any]] = None
        self.attempts = 0  # attempts started (metrics / tests)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.queue.on_enqueue = lambda entry: self.wake()
        self.queue.on_flush = self.wake
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(self.poll_interval, now=True).addErrback(
            lambda f: log.failure("relay loop stopped", f, event="relay.loop_failed"))

    def stop(self) -> "defer.Deferred[Any]":
        """Stop polling and wait for the attempts in flight."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.queue.on_enqueue = None
        self.queue.on_flush = None
        return defer.DeferredList(list(self.in_flight.values()))

    def wake(self) -> None:
        """Run a tick soon (coalesced), e.g. after an enqueue or a flush."""
        if not self._wake_pending:
            self._wake_pending = True

            def run() -> None:
                self._wake_pending = False
                self.tick()

            self.reactor.callLater(0, run)

    def tick(self) -> None:
        if self._flush_check is None:  # mailgwctl queue flush: looked for (and the queue re-read) in the pool
            known = set(self.queue.index)
            check = deferToThreadPool(self.reactor, self.queue.pool, take_flush_request, self.queue.directory)
            check.addCallback(self._flush_requested, known)
            check.addErrback(lambda f: log.failure("relay flush check", f, event="relay.internal_error"))
            check.addBoth(self._flush_checked)
            self._flush_check = check
        now = self.reactor.seconds()
        metrics.relay_queue_messages.set(len(self.queue.index))
        oldest = next(iter(self.queue.index.values()), None)
        metrics.relay_queue_oldest_age_seconds.set(max(0.0, now - oldest.created) if oldest else 0.0)
        free = self.concurrency - self.running_batches
        if free <= 0:
            return
        due = self.queue.due(now, limit=free * self.batch_size, skip=self.in_flight)
        while due and self.running_batches < self.concurrency:
            batch, due = due[: self.batch_size], due[self.batch_size :]
            self.running_batches += 1
            d = defer.ensureDeferred(self.attempt_batch(batch))
            for entry in batch:
                self.in_flight[entry.id] = d
            d.addErrback(lambda f: log.failure("relay attempt crashed", f, event="relay.internal_error"))
            d.addBoth(self._done, [e.id for e in batch])

    def _flush_requested(self, fresh: Optional[list[QueueEntry]], known: set[str]) -> None:
        if fresh is not None:
            self.queue.adopt_index(fresh, known)
            self.queue.flush()

    def _flush_checked(self, _: Any) -> None:
        self._flush_check = None

    def _done(self, _: Any, queue_ids: list[str]) -> None:
        self.running_batches -= 1
        for queue_id in queue_ids:
            self.in_flight.pop(queue_id, None)
        if self.queue.due(self.reactor.seconds(), limit=1, skip=self.in_flight):
            self.wake()

    # ----------------------------------------------------------------- one attempt

    async def attempt(self, entry: QueueEntry) -> None:
        await self.attempt_batch([entry])

    async def attempt_batch(self, entries: list[QueueEntry]) -> None:
        """One attempt for each entry; their remote recipients share one smarthost session."""
        live = []
        for entry in entries:
            if not self.queue.exists(entry.id):  # deleted by mailgwctl queue delete
                self.queue.index.pop(entry.id, None)
            else:
                live.append(entry)
        self.attempts += len(live)
        replies: dict[str, dict[str, tuple[int, str]]] = {e.id: {} for e in live}
        jobs: list[tuple[QueueEntry, Job]] = []
        for entry in live:
            path = self.queue.data_path(entry.id)
            for rcpt in entry.recipients:
                if self.is_local(rcpt):
                    replies[entry.id][rcpt] = await self._deliver_local(rcpt, path)
            remote = [r for r in entry.recipients if not self.is_local(r)]
            if remote and self.smarthost is None:
                replies[entry.id].update({r: (0, "no smarthost configured") for r in remote})
            elif remote:
                jobs.append((entry, Job(entry.sender, remote, path, entry.size, entry.eight_bit, entry.smtputf8)))
        if jobs:
            assert self.smarthost is not None
            results = await self.deliver_fn(self.reactor, self.smarthost, [job for _, job in jobs])
            for (entry, _), result in zip(jobs, results):
                replies[entry.id].update(result.replies)
        for entry in live:
            await self._settle(entry, replies[entry.id])

    async def _deliver_local(self, rcpt: str, path: str) -> tuple[int, str]:
        if self.local is None:
            return (0, "no local store")
        try:
            await self.local.deliver_file(rcpt, path)
            return (250, "250 2.0.0 delivered to mailbox")
        except MailError as e:
            code = e.smtp_code if not e.temporary else 451
            return (code, f"{code} {e.enhanced} {e.public}")
        except Exception as e:  # an unexpected store error is temporary: never lose mail over it
            log.failure("local delivery to {rcpt} failed", rcpt=rcpt, event="relay.local_failed")
            return (451, f"451 4.3.0 {type(e).__name__}")

    async def _settle(self, entry: QueueEntry, replies: dict[str, tuple[int, str]]) -> None:
        now = self.reactor.seconds()
        sent = [r for r in entry.recipients if 200 <= replies.get(r, (0, ""))[0] < 300]
        failed = {r: replies[r] for r in entry.recipients if replies.get(r, (0, ""))[0] >= 500}
        pending = [r for r in entry.recipients if r not in sent and r not in failed]
        expired = now - entry.created >= self.max_queue_age
        if expired and pending:
            for r in pending:
                failed[r] = (replies.get(r, (0, entry.last_error))[0], replies.get(r, (0, ""))[1] or entry.last_error
                             or "delivery time expired")
            pending = []
        for r in sent:
            log.info("relay sent {id} to {rcpt}", id=entry.id, rcpt=r, event="relay.sent", result="sent")
            metrics.relay_deliveries_total.labels(relay=self.name, result="sent").inc()
        if failed:
            await self._bounce(entry, failed, now, expired)
        if not pending:
            await self.queue.remove(entry.id)
            return
        entry.recipients = pending
        metrics.relay_deliveries_total.labels(relay=self.name, result="deferred").inc(len(pending))
        entry.attempts += 1
        entry.last_error = "; ".join(sorted({replies.get(r, (0, "?"))[1] for r in pending}))[:500]
        entry.next_attempt = now + self.backoff[min(entry.attempts - 1, len(self.backoff) - 1)]
        log.info("relay deferred {id} ({n} recipient(s)) until {when}: {err}", id=entry.id, n=len(pending),
                 when=iso8601(entry.next_attempt), err=entry.last_error, event="relay.deferred", result="deferred",
                 next_attempt=entry.next_attempt)
        await self.queue.update(entry)

    async def _bounce(self, entry: QueueEntry, failed: dict[str, tuple[int, str]], now: float, expired: bool) -> None:
        for r, (code, text) in failed.items():
            log.warn("relay bounced {id} to {rcpt}: {text}", id=entry.id, rcpt=r, text=text, event="relay.bounced",
                     result="bounced")
            metrics.relay_deliveries_total.labels(relay=self.name, result="bounced").inc()
        if entry.dsn or not entry.sender:
            return  # RFC 3464 §2: never bounce a bounce
        headers = await deferToThreadPool(self.reactor, self.queue.pool, original_headers, self.queue.data_path(entry.id))
        dsn = build_dsn(self.hostname, entry.sender, failed, headers, entry.id, entry.created, now, expired)
        await self.queue.enqueue("", [entry.sender], dsn, dsn=True)


def take_flush_request(directory: str) -> Optional[list[QueueEntry]]:
    """In a pool thread: if `mailgwctl queue flush` left its flag, remove it and return a fresh envelope scan."""
    flag = os.path.join(directory, "flush")
    try:
        os.unlink(flag)
    except FileNotFoundError:
        return None
    return scan_entries(directory)


class RelayService(Service):
    """Runs a RelayRunner while the process runs."""

    def __init__(self, runner: RelayRunner) -> None:
        self.runner = runner

    def startService(self) -> None:
        super().startService()
        self.runner.start()

    def stopService(self) -> None:
        # Not waiting for attempts in flight: MultiService stops the disk pool alongside us, and
        # their queue updates would never run. An interrupted attempt is retried after restart.
        super().stopService()
        self.runner.stop()
