"""`PrioritySemantics`: `options(priority=...)` travels with the job, through a real worker.

A priority is checked when it is given (a one-line `ConfigurationError`
naming it, before any I/O), reaches the broker in the job's envelope, is
kept through a retry into the dead-letter entry, and comes back with a
replay. Tests that read the priority back need `priority_levels` > 1.
Ordering by priority is not part of this class.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import upnext
from upnext import ConfigurationError, TaskExecutionError
from upnext.broker.protocol import MAX_PRIORITY, Ack, Broker, Delivery
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    broker_of,
    dlq_entry,
    need_dlq,
    violated,
)

__all__ = ["PrioritySemantics"]

LIMIT = 5.0


async def _priorities_broker(worker: upnext.Worker) -> Broker:
    """The worker's broker; skip unless it declares that priorities travel."""
    broker = await broker_of(worker)
    levels = broker.capabilities.priority_levels
    if levels <= 1:
        name = type(broker).__name__
        pytest.skip(f"needs capability priority_levels > 1; {name} declares {levels}")
    return broker


async def _take(broker: Broker, queue: str, count: int, timing: Timing) -> list[Delivery]:
    """Exactly `count` deliveries of `queue`, acked, read straight from the broker."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timing.tolerance(LIMIT)
    while len(got) < count and time.monotonic() < deadline:
        got += await broker.receive([queue], limit=count - len(got), lease=30.0, wait=0.25)
    await broker.settle([Ack(d) for d in got])
    assert len(got) == count, violated(f"{count} submitted jobs must reach the broker")
    return got


class PrioritySemantics(SemanticsBase):
    """Priorities as `task.options(priority=...)` documents them."""

    @pytest.mark.asyncio
    @pytest.mark.parametrize("bad", [-1, MAX_PRIORITY + 1, True, 1.5, "3"])
    async def test_bad_priority_is_refused_before_any_io(
        self, make_worker: WorkerFactory, bad: Any
    ) -> None:
        """options(priority=...) outside 0..MAX_PRIORITY, or not an int, is refused at once."""
        worker = make_worker()

        @worker.task
        async def job() -> None: ...

        with pytest.raises(ConfigurationError, match=r"^invalid priority: ") as raised:
            job.options(priority=bad)
        assert "\n" not in str(raised.value), violated("the error is one line")
        with pytest.raises(ConfigurationError, match=r"^invalid priority: "):
            job.options(delay=0.0).options(priority=bad)

    @pytest.mark.asyncio
    async def test_options_priority_reaches_the_broker(
        self, make_worker: WorkerFactory, timing: Timing, upnext_queue: str
    ) -> None:
        """A submitted job's envelope carries its priority; other options keep it."""
        worker = make_worker()

        @worker.task
        async def job(n: int) -> None: ...

        broker = await _priorities_broker(worker)
        urgent = job.options(priority=MAX_PRIORITY)
        await urgent.submit(0)
        await urgent.options(queue=upnext_queue).submit_many([{"n": 1}, {"n": 2}])
        await job.submit(3)
        got = await _take(broker, upnext_queue, 4, timing)
        assert sorted(d.envelope.priority for d in got) == [0] + [MAX_PRIORITY] * 3, violated(
            "options(priority=...) sets the envelope's priority; a plain submit has 0"
        )

    @pytest.mark.asyncio
    async def test_priority_is_kept_into_the_dlq_and_back_out_by_replay(
        self, make_worker: WorkerFactory, timing: Timing, upnext_queue: str
    ) -> None:
        """A job retried, then dead-lettered, keeps its priority; its replay carries it."""
        worker = make_worker()

        @worker.task(retries=1, retry_delay=timing.delay(0.02))
        async def fails() -> None:
            raise ValueError("no")

        async with worker:
            await need_dlq(worker)
            await _priorities_broker(worker)
            future = await fails.options(priority=3).submit()
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            entry = await dlq_entry(worker, future.queue, future.job_id)
        assert entry is not None, violated("a failed job has a DLQ entry")
        assert [a.number for a in entry.attempts] == [1, 2], violated("it ran twice")
        assert entry.priority == 3, violated(
            f"a job keeps its priority through a retry into the DLQ (entry has {entry.priority})"
        )
        replayed = await worker.dlq.replay(entry.id)
        [got] = await _take(await broker_of(worker), upnext_queue, 1, timing)
        assert (got.envelope.id, got.envelope.priority) == (replayed, 3), violated(
            "a replayed job carries its dead-lettered priority"
        )
