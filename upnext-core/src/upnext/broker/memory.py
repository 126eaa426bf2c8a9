"""The in-process reference backend behind ``memory://`` URLs.

A real broker, result store and admin in one object: timed leases,
redelivery, delays, dead letters and waits all behave as on a server, so the
whole conformance suite runs against it. It is thread-safe and works from
several event loops at once (the sync twins use a background loop).

Brokers live in a per-process registry keyed by URL, so a producer and a
worker in one process that name the same URL share one broker. Nothing
survives the process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from upnext.broker.memory_state import MemoryStateStore
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
    Release,
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


@dataclass(slots=True)
class _Job:
    envelope: Envelope
    due: float = 0.0
    hand_outs: int = 0
    token: int = 0
    held: bool = False
    lease_until: float = 0.0


@dataclass(slots=True)
class _Queue:
    ready: deque[str] = field(default_factory=deque)
    delayed: list[tuple[float, int, str]] = field(default_factory=list)
    leased: list[tuple[float, int, str]] = field(default_factory=list)


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
        self._seq = itertools.count()
        self._jobs: dict[str, _Job] = {}
        self._queues: dict[str, _Queue] = {}
        self._receivers = _Waiters()
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

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    def _place(self, job: _Job, delay: float, now: float, *, front: bool = False) -> None:
        queue = self._queue(job.envelope.queue)
        job.held = False
        if delay > 0:
            job.due = now + delay
            heapq.heappush(queue.delayed, (job.due, next(self._seq), job.envelope.id))
        else:
            job.due = now
            if front:
                queue.ready.appendleft(job.envelope.id)
            else:
                queue.ready.append(job.envelope.id)

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Store the envelopes and wake receivers; an id not yet settled is left alone."""
        now = time.monotonic()
        with self._lock:
            for envelope in envelopes:
                if envelope.id in self._jobs:
                    continue  # queued, scheduled or held: a known id never disturbs its job
                job = _Job(envelope)
                self._jobs[envelope.id] = job
                self._place(job, envelope.delay, now)
            self._receivers.wake_all()

    def _promote(self, queue: _Queue, now: float) -> None:
        while queue.delayed and queue.delayed[0][0] <= now:
            _, _, job_id = heapq.heappop(queue.delayed)
            job = self._jobs.get(job_id)
            if job is not None and not job.held and job.due <= now:
                queue.ready.append(job_id)
        while queue.leased and queue.leased[0][0] <= now:
            _, token, job_id = heapq.heappop(queue.leased)
            job = self._jobs.get(job_id)
            if job is not None and job.held and job.token == token and job.lease_until <= now:
                job.held = False
                queue.ready.append(job_id)

    def _next_event(self, names: Sequence[str]) -> float | None:
        times = [
            heap[0][0]
            for name in names
            if (queue := self._queues.get(name)) is not None
            for heap in (queue.delayed, queue.leased)
            if heap
        ]
        return min(times) if times else None

    def _take(self, names: Sequence[str], limit: int, lease: float, now: float) -> list[Delivery]:
        out: list[Delivery] = []
        for name in names:
            queue = self._queues.get(name)
            if queue is None:
                continue
            self._promote(queue, now)
            while queue.ready and len(out) < limit:
                job = self._jobs.get(queue.ready.popleft())
                if job is None or job.held or job.due > now:
                    continue
                job.hand_outs += 1
                job.token = next(self._seq)
                job.held = True
                job.lease_until = now + lease
                heapq.heappush(queue.leased, (job.lease_until, job.token, job.envelope.id))
                out.append(Delivery(job.envelope, job.token, job.hand_outs > 1, job.hand_outs))
        return out

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Hand out due jobs, blocking up to `wait` s for one."""
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            with self._lock:
                out = self._take(queues, limit, lease, now)
                if out or now >= deadline:
                    return out
                next_event = self._next_event(queues)
                fut = self._receivers.add()
            until = deadline if next_event is None else min(deadline, next_event)
            try:
                await _park(fut, until - now)
            finally:
                with self._lock:
                    self._receivers.discard(fut)

    def _holds(self, delivery: Delivery, now: float) -> _Job | None:
        job = self._jobs.get(delivery.envelope.id)
        if job is None or not job.held or job.token != delivery.receipt or job.lease_until < now:
            return None
        return job

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Apply each item atomically; LeaseLost where the lease is gone."""
        now = time.monotonic()
        outcomes: list[SettleOutcome] = []
        woken: list[str] = []
        with self._lock:
            for item in items:
                job = self._holds(item.delivery, now)
                if job is None:
                    outcomes.append(LeaseLost(f"lease lost for job {item.delivery.envelope.id}"))
                    continue
                outcomes.append(None)
                job_id = job.envelope.id
                if isinstance(item, Ack | DeadLetter):
                    del self._jobs[job_id]
                    if isinstance(item, DeadLetter):
                        self._dead[item.record.id] = item.record
                    if item.result is not None:
                        self._store_result(item.result, now)
                        woken.append(item.result.job_id)
                elif isinstance(item, Retry):
                    job.envelope = replace(job.envelope, body=item.body, delay=item.delay)
                    job.hand_outs = 0
                    job.token = next(self._seq)
                    self._place(job, item.delay, now)
                elif isinstance(item, Release):
                    job.hand_outs -= 1
                    job.token = next(self._seq)
                    self._place(job, 0.0, now, front=True)
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
                job = self._holds(delivery, now)
                if job is None:
                    outcomes.append(LeaseLost(f"lease lost for job {delivery.envelope.id}"))
                    continue
                job.lease_until = now + lease
                queue = self._queue(job.envelope.queue)
                heapq.heappush(queue.leased, (job.lease_until, job.token, job.envelope.id))
                outcomes.append(None)
        return outcomes

    async def cancel(self, queue: str, job_id: str) -> bool:
        """Remove a job that is not held; True if it was queued or scheduled."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.held or job.envelope.queue != queue:
                return False
            del self._jobs[job_id]
            return True

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
            job = _Job(envelope)
            self._jobs[envelope.id] = job
            self._place(job, envelope.delay, now)
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
            return sorted(self._queues)

    async def stats(self, queue: str) -> QueueStats:
        """Exact counts."""
        now = time.monotonic()
        ready = scheduled = in_flight = 0
        with self._lock:
            for job in self._jobs.values():
                if job.envelope.queue != queue:
                    continue
                if job.held and job.lease_until > now:
                    in_flight += 1
                elif job.held or job.due <= now:
                    ready += 1
                else:
                    scheduled += 1
            dead = sum(1 for r in self._dead.values() if r.queue == queue)
        return QueueStats(ready, scheduled, in_flight, dead)

    async def purge(self, queue: str) -> int:
        """Drop ready and scheduled jobs of `queue`; held ones stay."""
        with self._lock:
            doomed = [k for k, j in self._jobs.items() if j.envelope.queue == queue and not j.held]
            for key in doomed:
                del self._jobs[key]
            q = self._queues.get(queue)
            if q is not None:
                q.ready.clear()
                q.delayed.clear()
        return len(doomed)

    def pending(self) -> int:
        """Jobs not yet settled, all queues (for the shutdown warning)."""
        with self._lock:
            return len(self._jobs)
