"""The job table of the ``memory://`` backend: queues, delays and leases.

Plain data with no lock and no waiting: `MemoryBroker` holds its lock around
every call and wakes its waiters. Each queue keeps a ready deque and two heaps
(delayed jobs by due time, held jobs by lease deadline). Heap entries are never
removed in place; one that no longer matches its job is skipped when popped.
Times are `time.monotonic` seconds, passed in by the caller.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from upnext.broker.protocol import Delivery, Envelope

__all__ = ["JobTable"]


@dataclass(slots=True)
class _Queue:
    ready: deque[str] = field(default_factory=deque)
    delayed: list[tuple[float, int, str]] = field(default_factory=list)
    leased: list[tuple[float, int, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    envelope: Envelope
    queue: _Queue  # its envelope's queue, looked up once
    due: float = 0.0
    hand_outs: int = 0
    token: int = 0
    held: bool = False
    lease_until: float = 0.0


class JobTable:
    """Every job not yet settled, by id, and the queues that order them."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self._jobs: dict[str, _Job] = {}
        self._queues: dict[str, _Queue] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def queue_names(self) -> list[str]:
        """Every queue that has seen a job, sorted."""
        return sorted(self._queues)

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    def _place(self, job: _Job, delay: float, now: float, *, front: bool = False) -> None:
        queue = job.queue
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

    def add(self, envelope: Envelope, now: float) -> bool:
        """Store `envelope` as a new job, ready or delayed by its `delay`.

        False, and nothing changed, if a job with its id is not yet settled.
        """
        if envelope.id in self._jobs:
            return False
        job = _Job(envelope, self._queue(envelope.queue))
        self._jobs[envelope.id] = job
        self._place(job, envelope.delay, now)
        return True

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

    def next_event(self, names: Sequence[str]) -> float | None:
        """When the next delayed job falls due or lease runs out in `names`; None if never."""
        times = [
            heap[0][0]
            for name in names
            if (queue := self._queues.get(name)) is not None
            for heap in (queue.delayed, queue.leased)
            if heap
        ]
        return min(times) if times else None

    def take(self, names: Sequence[str], limit: int, lease: float, now: float) -> list[Delivery]:
        """Hand out up to `limit` due jobs of `names`, each held for `lease` s."""
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

    def _holding(self, delivery: Delivery, now: float) -> _Job | None:
        job = self._jobs.get(delivery.envelope.id)
        if job is None or not job.held or job.token != delivery.receipt or job.lease_until < now:
            return None
        return job

    def finish(self, delivery: Delivery, now: float) -> bool:
        """Remove a held job (acked or dead-lettered); False if its lease is gone."""
        job_id = delivery.envelope.id
        job = self._jobs.get(job_id)  # `_holding`, inline: one call less per settle
        if job is None or not job.held or job.token != delivery.receipt or job.lease_until < now:
            return False
        del self._jobs[job_id]
        return True

    def retry(self, delivery: Delivery, body: bytes, delay: float, now: float) -> bool:
        """Requeue a held job with a new body after `delay` s, its hand-outs reset."""
        job = self._holding(delivery, now)
        if job is None:
            return False
        job.envelope = replace(job.envelope, body=body, delay=delay)
        job.hand_outs = 0
        job.token = next(self._seq)
        self._place(job, delay, now)
        return True

    def release(self, delivery: Delivery, now: float) -> bool:
        """Put a held job back at the head of its queue; this hand-out does not count."""
        job = self._holding(delivery, now)
        if job is None:
            return False
        job.hand_outs -= 1
        job.token = next(self._seq)
        self._place(job, 0.0, now, front=True)
        return True

    def extend(self, delivery: Delivery, lease: float, now: float) -> bool:
        """Push a held job's lease to `lease` s from now; False if it is gone."""
        job = self._holding(delivery, now)
        if job is None:
            return False
        job.lease_until = now + lease
        heapq.heappush(job.queue.leased, (job.lease_until, job.token, job.envelope.id))
        return True

    def cancel(self, queue: str, job_id: str) -> bool:
        """Remove a job of `queue` that is not held; True if it was there."""
        job = self._jobs.get(job_id)
        if job is None or job.held or job.envelope.queue != queue:
            return False
        del self._jobs[job_id]
        return True

    def counts(self, queue: str, now: float) -> tuple[int, int, int]:
        """(ready, scheduled, in flight) of `queue`; an expired lease counts as ready."""
        ready = scheduled = in_flight = 0
        for job in self._jobs.values():
            if job.envelope.queue != queue:
                continue
            if job.held and job.lease_until > now:
                in_flight += 1
            elif job.held or job.due <= now:
                ready += 1
            else:
                scheduled += 1
        return ready, scheduled, in_flight

    def waiting(self, queue: str, *, scheduled: bool, now: float) -> list[tuple[float, Envelope]]:
        """Jobs of `queue` no receiver holds, with due times, in the order they would run.

        Ready ones (due, or their lease ran out) by due time, else scheduled
        ones soonest first.
        """
        found: list[tuple[float, Envelope]] = []
        for job in self._jobs.values():  # in insertion order: the sort below keeps it on ties
            if job.envelope.queue != queue or (job.held and job.lease_until > now):
                continue
            due = job.lease_until if job.held else job.due
            if (due > now) == scheduled:
                found.append((due, job.envelope))
        found.sort(key=lambda item: item[0])
        return found

    def purge(self, queue: str) -> int:
        """Drop the ready and scheduled jobs of `queue`; held ones stay."""
        doomed = [k for k, j in self._jobs.items() if j.envelope.queue == queue and not j.held]
        for key in doomed:
            del self._jobs[key]
        q = self._queues.get(queue)
        if q is not None:
            q.ready.clear()
            q.delayed.clear()
        return len(doomed)
