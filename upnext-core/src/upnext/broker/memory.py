"""The in-process reference backend behind ``memory://`` URLs.

A real broker, result store and admin in one object: timed leases,
redelivery, delays, dead letters and waits all behave as on a server, so the
whole conformance suite runs against it. It is thread-safe and works from
several event loops at once (the sync twins use a background loop).

Brokers live in a per-process registry keyed by URL, so a producer and a
worker in one process that name the same URL share one broker. Nothing
survives the process. This module holds the lock, the waiting and the
results; the jobs and their leases are a `JobTable` (`memory_jobs`), the
shared state a `MemoryStateStore` (`memory_state`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from upnext.broker.memory_jobs import JobTable
from upnext.broker.memory_state import MemoryStateStore
from upnext.broker.optional import WaitingJob, WaitingPage
from upnext.broker.protocol import (
    MAX_PRIORITY,
    Ack,
    Capabilities,
    DeadLetter,
    DeadLetterQuery,
    DeadLetterRecord,
    Delivery,
    Envelope,
    QueueStats,
    ResultWrite,
    Retry,
    SettleItem,
    SettleOutcome,
)
from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError, DeadLetterNotFound, LeaseLost

__all__ = ["MemoryBroker"]

_REGISTRY: dict[str, MemoryBroker] = {}
_REGISTRY_LOCK = threading.Lock()
_FINISHING = (Ack, DeadLetter)  # settle items that remove their job


def _offset(cursor: str | None) -> int:
    """The count of jobs a `waiting_jobs` cursor says were shown; ConfigurationError if bad."""
    if cursor is None:
        return 0
    if not cursor.isdecimal() or len(cursor) > 18:
        raise ConfigurationError(f"malformed waiting-jobs cursor: {cursor[:80]!r}")
    return int(cursor)


class _Waiters:
    """Futures of blocked calls, each woken on its own event loop."""

    def __init__(self) -> None:
        self._items: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._items.append((loop, fut))
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        self._items = [item for item in self._items if item[1] is not fut]

    def __len__(self) -> int:
        return len(self._items)

    def wake_all(self) -> None:
        items, self._items = self._items, []
        current = asyncio._get_running_loop()
        for loop, fut in items:
            if loop is current:
                if not fut.done():
                    fut.set_result(None)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _park(fut: asyncio.Future[None], timeout: float) -> None:
    """Wait until `fut` is woken or `timeout` passes; a cancellation always propagates."""
    handle = asyncio.get_running_loop().call_later(max(timeout, 0.0), _resolve, fut)
    try:
        await fut
    finally:
        handle.cancel()


class MemoryBroker(MemoryStateStore):
    """Broker, result store, state store, dead-letter admin and queue admin in one process."""

    capabilities = Capabilities(
        timed_leases=True,
        counts_deliveries=True,
        cancel_queued=True,
        dlq_access="indexed",
        dedupes_on_enqueue=True,
        transactional_enqueue=False,
        delay_quantum=0.0,
        priority_levels=MAX_PRIORITY + 1,
    )

    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self.url = url
        self._lock = threading.Lock()
        self._jobs = JobTable()
        self._receivers = _Waiters()
        self._wakes = 0  # wake_receivers calls so far: a receive returns once it changes
        self._results: dict[str, tuple[bytes, float]] = {}
        self._result_waiters: dict[str, _Waiters] = {}
        self._dead: dict[str, DeadLetterRecord] = {}
        self.workers_attached = 0
        self.warned_no_worker = False
        self.no_worker_check_armed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryBroker:
        """The broker registered under `url`, created on first use."""
        if not url.lower().startswith("memory://"):
            raise ConfigurationError(f"not a memory:// URL: {redact_url(url)!r}")
        with _REGISTRY_LOCK:
            broker = _REGISTRY.get(url)
            if broker is None:
                broker = _REGISTRY[url] = cls(url)
            return broker

    def __repr__(self) -> str:
        return f"MemoryBroker({self.url!r})"

    # -- lifecycle -----------------------------------------------------------

    async def connect(self) -> None:
        """Nothing to open: the broker lives in this process."""

    async def aclose(self) -> None:
        """Nothing to close; queued jobs stay for other users of this URL."""

    # -- broker --------------------------------------------------------------

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Store the envelopes and wake receivers; an id not yet settled is left alone."""
        now = time.monotonic()
        with self._lock:
            for envelope in envelopes:
                # queued, scheduled or held: a known id never disturbs its job
                self._jobs.add(envelope, now)
            self._receivers.wake_all()

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Hand out due jobs, blocking up to `wait` s for one."""
        deadline = time.monotonic() + wait
        wakes = self._wakes
        while True:
            now = time.monotonic()
            with self._lock:
                out = self._jobs.take(queues, limit, lease, now)
                if out or now >= deadline or self._wakes != wakes:
                    return out
                next_event = self._jobs.next_event(queues)
                fut = self._receivers.add()
            until = deadline if next_event is None else min(deadline, next_event)
            try:
                await _park(fut, until - now)
            finally:
                with self._lock:
                    self._receivers.discard(fut)

    def _settle_one(self, item: SettleItem, now: float, woken: list[str]) -> bool:
        """Apply one item to its held job; False if the lease is gone.

        The job id of a result written is appended to `woken`.
        """
        delivery = item.delivery
        if isinstance(item, _FINISHING):
            if not self._jobs.finish(delivery, now):
                return False
            if isinstance(item, DeadLetter):
                self._dead[item.record.id] = item.record
            if item.result is not None:
                self._store_result(item.result, now)
                woken.append(item.result.job_id)
            return True
        if isinstance(item, Retry):
            return self._jobs.retry(delivery, item.body, item.delay, now)
        return self._jobs.release(delivery, now)

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Apply each item atomically; LeaseLost where the lease is gone."""
        now = time.monotonic()
        outcomes: list[SettleOutcome] = []
        woken: list[str] = []
        with self._lock:
            for item in items:
                if self._settle_one(item, now, woken):
                    outcomes.append(None)
                else:
                    outcomes.append(LeaseLost(f"lease lost for job {item.delivery.envelope.id}"))
            self._receivers.wake_all()
            for job_id in woken:
                self._wake_result(job_id)
        return outcomes

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
        """Push each held lease to `lease` s from now."""
        now = time.monotonic()
        outcomes: list[SettleOutcome] = []
        with self._lock:
            for delivery in deliveries:
                if self._jobs.extend(delivery, lease, now):
                    outcomes.append(None)
                else:
                    outcomes.append(LeaseLost(f"lease lost for job {delivery.envelope.id}"))
        return outcomes

    async def cancel(self, queue: str, job_id: str) -> bool:
        """Remove a job that is not held; True if it was queued or scheduled."""
        with self._lock:
            return self._jobs.cancel(queue, job_id)

    async def wake_receivers(self) -> None:
        """Make the receives now waiting return what they have (`WakeableReceive`)."""
        with self._lock:
            self._wakes += 1
            self._receivers.wake_all()

    # -- results -------------------------------------------------------------

    def reply_address(self) -> str | None:
        """Results are stored in this object; no address is needed."""
        return None

    def _store_result(self, write: ResultWrite, now: float) -> None:
        if write.ttl > 0:
            self._results[write.job_id] = (write.data, now + write.ttl)

    def _wake_result(self, job_id: str) -> None:
        waiters = self._result_waiters.pop(job_id, None)
        if waiters is not None:
            waiters.wake_all()

    async def put_results(self, writes: Sequence[ResultWrite]) -> None:
        """Store results and wake their waiters."""
        now = time.monotonic()
        with self._lock:
            for write in writes:
                self._store_result(write, now)
                self._wake_result(write.job_id)

    def _read_result(self, job_id: str, now: float) -> bytes | None:
        found = self._results.get(job_id)
        if found is None:
            return None
        if found[1] <= now:
            del self._results[job_id]
            return None
        return found[0]

    async def get_result(self, job_id: str, *, queue: str, wait: float) -> bytes | None:
        """The stored result, waiting up to `wait` s for it."""
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            with self._lock:
                data = self._read_result(job_id, now)
                if data is not None or now >= deadline:
                    return data
                fut = self._result_waiters.setdefault(job_id, _Waiters()).add()
            try:
                await _park(fut, deadline - now)
            finally:
                with self._lock:
                    waiters = self._result_waiters.get(job_id)
                    if waiters is not None:
                        waiters.discard(fut)
                        if not waiters:
                            del self._result_waiters[job_id]

    # -- dead-letter admin ---------------------------------------------------

    async def dlq_records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """The records `query` asks for, newest first."""
        with self._lock:
            return query.select(self._dead.values())

    async def dlq_get(self, entry_id: str) -> DeadLetterRecord:
        """One record, or DeadLetterNotFound."""
        with self._lock:
            record = self._dead.get(entry_id)
        if record is None:
            raise DeadLetterNotFound(entry_id)
        return record

    async def dlq_replay(self, entry_id: str, envelope: Envelope) -> None:
        """Remove the entry and enqueue `envelope`, atomically."""
        now = time.monotonic()
        with self._lock:
            if self._dead.pop(entry_id, None) is None:
                raise DeadLetterNotFound(entry_id)
            self._jobs.add(envelope, now)
            self._receivers.wake_all()

    async def dlq_delete(self, entry_id: str) -> None:
        """Remove one entry, or DeadLetterNotFound."""
        with self._lock:
            if self._dead.pop(entry_id, None) is None:
                raise DeadLetterNotFound(entry_id)

    async def dlq_purge(self, queue: str | None = None) -> int:
        """Remove every entry (of `queue`)."""
        with self._lock:
            doomed = [k for k, r in self._dead.items() if queue is None or r.queue == queue]
            for key in doomed:
                del self._dead[key]
        return len(doomed)

    async def dlq_count(self, queue: str | None = None) -> int:
        """How many entries (of `queue`)."""
        with self._lock:
            return sum(1 for r in self._dead.values() if queue is None or r.queue == queue)

    # -- queue admin ---------------------------------------------------------

    async def queues(self) -> list[str]:
        """Every queue that has seen a job."""
        with self._lock:
            return self._jobs.queue_names()

    async def stats(self, queue: str) -> QueueStats:
        """Exact counts."""
        now = time.monotonic()
        with self._lock:
            ready, scheduled, in_flight = self._jobs.counts(queue, now)
            dead = sum(1 for r in self._dead.values() if r.queue == queue)
        return QueueStats(ready, scheduled, in_flight, dead)

    async def waiting_jobs(
        self, queue: str, *, scheduled: bool, limit: int, cursor: str | None = None
    ) -> WaitingPage:
        """Jobs no receiver holds, by due time; the cursor is the count already shown."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        start = _offset(cursor)
        now, wall = time.monotonic(), time.time()
        with self._lock:
            found = self._jobs.waiting(queue, scheduled=scheduled, now=now)
        page = [
            WaitingJob(e.id, e.queue, e.body, e.priority, wall + due - now if scheduled else None)
            for due, e in found[start : start + limit]
        ]
        more = start + limit < len(found)
        return WaitingPage(page, str(start + limit) if more else None)

    async def purge(self, queue: str) -> int:
        """Drop ready and scheduled jobs of `queue`; held ones stay."""
        with self._lock:
            return self._jobs.purge(queue)

    def pending(self) -> int:
        """Jobs not yet settled, all queues (for the shutdown warning)."""
        with self._lock:
            return len(self._jobs)
