"""`PauseSemantics`: pausing and resuming a queue through real workers on your broker.

Covers docs/flow-control.md#pausing-a-queue: a paused queue accepts submits and starts none of them
(a worker started while it is paused included); resume runs them all, none
lost; a job running when the pause is set finishes; the worker's other
queues keep running. A worker learns a pause in its tick (once a second), so
"no job starts" is checked from `PAUSE_SEEN` seconds after `pause_queue`.
Without a state store (RabbitMQ with no ``results=``) those tests skip, and
one checks the one-line error naming ``results=``.
"""

from __future__ import annotations

import asyncio

import pytest

import upnext
from upnext.queues import pause_queue, paused_queues, resume_queue
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    violated,
    wait_until,
)

__all__ = ["PauseSemantics"]

PAUSE_SEEN = 1.2  # seconds: one tick (1 s) and its read, before scaling


def _need_state(worker: upnext.Worker) -> None:
    if not worker.factories.has_state:
        pytest.skip("pausing a queue needs a state store (this broker keeps none without results=)")


def _recording(
    worker: upnext.Worker, started: list[int], queue: str | None = None
) -> upnext.Task[..., int]:
    """A task of `worker` (on `queue`, default its own) recording each start in `started`."""

    @worker.task(name=f"{queue or worker.name}.job", queue=queue)
    async def job(n: int, hold: float = 0.0) -> int:
        started.append(n)
        await asyncio.sleep(hold)
        return n

    return job


class PauseSemantics(SemanticsBase):
    """Pause and resume: stored in the broker, seen by every worker within a tick."""

    @pytest.mark.asyncio
    async def test_pause_accepts_jobs_and_starts_none_until_resumed(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Paused before the worker starts: submits succeed, nothing starts; resume runs all."""
        worker, started = make_worker(), list[int]()
        _need_state(worker)
        job = _recording(worker, started)
        await pause_queue(worker, worker.name, reason="test")
        try:
            futures = [await job.submit(n) for n in range(3)]
            async with worker:
                futures += [await job.submit(n) for n in range(3, 5)]
                await asyncio.sleep(timing.delay(PAUSE_SEEN))
                assert started == [], violated(f"no job of a paused queue starts, ran {started}")
                assert await resume_queue(worker, worker.name)
                values = [await f.value(timeout=timing.tolerance(3.0)) for f in futures]
        finally:
            await resume_queue(worker, worker.name)
        assert sorted(values) == list(range(5)), violated("resume runs every job, none lost")
        assert sorted(started) == list(range(5)), violated(f"each job ran once: {started}")

    @pytest.mark.asyncio
    async def test_pause_lets_a_running_job_finish_and_the_next_one_wait(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Paused while a job runs: it finishes; the next (prefetched or not) waits, uncharged."""
        worker, started = make_worker(concurrency=1), list[int]()
        _need_state(worker)
        job = _recording(worker, started)
        async with worker:
            # It outlasts the tick that reads the pause, so the next job would start after it.
            running = await job.submit(0, hold=timing.delay(PAUSE_SEEN + 0.2))
            waiting = await job.submit(1)  # held in the prefetch buffer where there is one
            await wait_until(lambda: bool(started), within=timing.tolerance(3.0), what="a start")
            await pause_queue(worker, worker.name)
            try:
                assert await running.value(timeout=timing.tolerance(3.0)) == 0, violated(
                    "a job running when its queue is paused finishes"
                )
                await asyncio.sleep(timing.delay(0.3))
                assert started == [0], violated(f"nothing starts once paused, ran {started}")
            finally:
                await resume_queue(worker, worker.name)
            result = await waiting.result(timeout=timing.tolerance(3.0))
        assert result.value == 1
        assert result.attempts == 1, violated("a job held back by a pause is charged no attempt")

    @pytest.mark.asyncio
    async def test_a_queue_paused_with_jobs_prefetched_leaves_the_other_running(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Paused with its jobs prefetched: the worker's other queue still runs; resume is
        seen within a tick and a slice, not a whole receive wait."""
        worker, started, others = make_worker(concurrency=1), list[int](), list[int]()
        _need_state(worker)
        job = _recording(worker, started)
        other_job = _recording(worker, others, queue=f"{worker.name}-other")
        async with worker:
            futures = [await job.submit(n, hold=timing.delay(0.2)) for n in range(6)]
            await wait_until(lambda: bool(started), within=timing.tolerance(3.0), what="a start")
            await pause_queue(worker, worker.name)
            try:
                await asyncio.sleep(timing.delay(PAUSE_SEEN))
                done = len(started)
                other = await other_job.submit(99)
                assert await other.value(timeout=timing.tolerance(2.0)) == 99, violated(
                    "a paused queue's prefetched jobs never hold up the worker's other queues"
                )
                assert len(started) == done, violated("nothing of the paused queue starts")
            finally:
                resumed = asyncio.get_running_loop().time()
                await resume_queue(worker, worker.name)
            await wait_until(
                lambda: len(started) > done,
                within=timing.tolerance(PAUSE_SEEN + 0.5),
                what="a job of the resumed queue starts within a tick of the resume",
            )
            waited = asyncio.get_running_loop().time() - resumed
            values = [await f.value(timeout=timing.tolerance(5.0)) for f in futures]
        assert values == list(range(6)), violated("every job of the paused queue runs, none lost")
        assert waited < timing.tolerance(PAUSE_SEEN + 0.5)

    @pytest.mark.asyncio
    async def test_pause_leaves_the_other_queues_of_a_worker_running(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """One queue paused: the same worker's other queue runs its jobs; the pause is listed."""
        worker, started, others = make_worker(), list[int](), list[int]()
        _need_state(worker)
        paused_job = _recording(worker, started)
        other_job = _recording(worker, others, queue=f"{worker.name}-other")
        pause = await pause_queue(worker, worker.name, reason="incident")
        try:
            listed = [p for p in await paused_queues(worker) if p.queue == worker.name]
            assert listed == [pause], violated(f"the pause is listed as set: {listed}")
            assert pause.reason == "incident"
            async with worker:
                await paused_job.submit(1)
                assert await (await other_job.submit(2)).value(timeout=timing.tolerance(2.0)) == 2
                await asyncio.sleep(timing.delay(0.3))
                assert started == [], violated("the paused queue stays paused meanwhile")
        finally:
            assert await resume_queue(worker, worker.name)
        assert worker.name not in {p.queue for p in await paused_queues(worker)}

    @pytest.mark.asyncio
    async def test_pause_without_a_state_store_names_results(
        self, make_worker: WorkerFactory
    ) -> None:
        """Where no state is kept, pause/resume raise one line naming ``results=``."""
        worker = make_worker()
        if worker.factories.has_state:
            pytest.skip("this broker keeps shared state")
        for call in (pause_queue, resume_queue):
            with pytest.raises(upnext.ConfigurationError, match="results="):
                await call(worker, worker.name)
