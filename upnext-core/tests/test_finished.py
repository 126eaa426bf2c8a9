"""The jobs a worker finished per queue: counted at durable settlement, published by its tick."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import upnext
from upnext._finished import FinishedCounts
from upnext.workers import QueueCounts, WorkerInfo, live_workers


def test_only_final_settlements_count_and_failures_among_them() -> None:
    counts = FinishedCounts()
    for status in ("complete", "complete", "failed", "cancelled", "scheduled", "released"):
        counts.count("q", status)
    counts.count("other", "failed")
    assert counts.snapshot() == {
        "q": QueueCounts(processed=4, failed=1),
        "other": QueueCounts(processed=1, failed=1),
    }


def test_an_entry_without_counts_reads_as_none_finished() -> None:
    """A registry entry written by a worker older than the field still parses."""
    entry = WorkerInfo.model_validate(
        {
            "worker_id": "w",
            "name": "n",
            "host": "h",
            "pid": 1,
            "queues": ["q"],
            "concurrency": 1,
            "started_at": 0.0,
            "beat_at": 0.0,
            "running_count": 0,
            "running": [{"job_id": "j", "function": "f", "attempt": 1, "started_at": None}],
        }
    )
    assert entry.finished == {}
    assert entry.running[0].queue is None


async def _registered(worker: upnext.Worker, until: QueueCounts) -> WorkerInfo:
    """The worker's registry entry once its counts of queue "fin" reach `until` (1 s ticks)."""
    async with asyncio.timeout(5):
        while True:
            (info,) = await live_workers(worker)
            if info.finished.get("fin") == until:
                return info
            await asyncio.sleep(0.05)


async def test_a_worker_publishes_what_it_finished_per_queue() -> None:
    """3 ok, 2 dead-lettered, 1 retried once then ok: 6 processed, 2 failed, the retry not twice."""
    worker = upnext.Worker("fin", broker=f"memory://fin-{uuid.uuid4().hex}", load_plugins=False)
    tries: list[int] = []

    @worker.task(name="fin.ok")
    async def ok() -> None:
        return None

    @worker.task(name="fin.bad", retries=0)
    async def bad() -> None:
        raise ValueError("no")

    @worker.task(name="fin.flaky", retries=1, retry_delay=0.01)
    async def flaky() -> None:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("once")

    async with worker:
        futures = [await ok.submit() for _ in range(3)] + [await flaky.submit()]
        failing = [await bad.submit() for _ in range(2)]
        for future in futures:
            await future.result(timeout=5)
        for future in failing:
            with pytest.raises(upnext.TaskExecutionError):
                await future.result(timeout=5)
        info = await _registered(worker, QueueCounts(processed=6, failed=2))
    assert set(info.finished) == {"fin"}
    assert len(tries) == 2
