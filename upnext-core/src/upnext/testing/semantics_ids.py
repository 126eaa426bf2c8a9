"""`JobIdSemantics`: a known job id never disturbs a job, through a real worker.

A caller chooses a job's id with ``task.options(job_id=...)`` (for `submit`,
`wait` and a one-call `submit_many`). Submitting an id whose job is queued,
scheduled or running changes nothing: the job keeps its arguments and due
time, runs once, and the repeated submit returns a Future for the same id
that gets the existing job's result. Needs shared state (the job id is
claimed there, on every broker); the window after the job is done is
`UniqueJobSemantics`'s.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from upnext.testing.semantics_base import (
    EARLY_SLACK,
    SemanticsBase,
    Timing,
    WorkerFactory,
    violated,
    wait_until,
)
from upnext.testing.semantics_unique_modes import need_state

__all__ = ["JobIdSemantics"]

LIMIT = 5.0


class JobIdSemantics(SemanticsBase):
    """A known job id never disturbs a job ("Job ids" in docs/semantics.md), via submit(_many)."""

    @pytest.mark.asyncio
    async def test_repeated_job_id_runs_a_queued_job_once(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """A queued job's id submitted again keeps the first arguments; the job runs once."""
        worker = make_worker()
        runs: list[int] = []

        @worker.task
        async def record(x: int) -> int:
            runs.append(x)
            return x

        need_state(worker)
        job = record.options(job_id=f"{upnext_queue}-job")
        futures = [await job.submit(x=1), await job.submit(x=2)]
        futures += await job.submit_many([{"x": 3}])
        async with worker:
            values = [await f.value(timing.tolerance(LIMIT)) for f in futures]
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert {f.job_id for f in futures} == {f"{upnext_queue}-job"}
        assert values == [1, 1, 1], violated("a repeated id's Future gets its job's result")
        assert runs == [1], violated("a queued job's id submitted again: it runs once, as first")

    @pytest.mark.asyncio
    async def test_repeated_job_id_keeps_a_scheduled_job(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """A scheduled job's id submitted again, due now, keeps its due time and arguments."""
        worker = make_worker()
        runs: list[tuple[int, float]] = []

        @worker.task
        async def record(x: int) -> int:
            runs.append((x, time.monotonic()))
            return x

        need_state(worker)
        delay, job_id = timing.delay(0.8), f"{upnext_queue}-job"
        submitted = time.monotonic()
        first = await record.options(job_id=job_id, delay=delay).submit(x=1)
        await record.options(job_id=job_id).submit(x=2)
        async with worker:
            assert await first.value(timing.tolerance(LIMIT)) == 1, violated(
                "a scheduled job submitted again under its id keeps its arguments"
            )
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert [x for x, _ in runs] == [1], violated("a scheduled job submitted again runs once")
        assert runs[0][1] - submitted >= delay - EARLY_SLACK, violated(
            "a scheduled job submitted again under its id keeps its due time"
        )

    @pytest.mark.asyncio
    async def test_repeated_job_id_never_takes_over_a_running_job(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """A running job's id submitted again starts no second run, at once or after it ends."""
        worker = make_worker(concurrency=4)
        started: list[int] = []
        go_on = asyncio.Event()

        @worker.task
        async def hold(x: int) -> int:
            started.append(x)
            await go_on.wait()
            return x

        need_state(worker)
        job = hold.options(job_id=f"{upnext_queue}-job")
        async with worker:
            first = await job.submit(x=1)
            try:
                await wait_until(
                    lambda: started == [1], within=timing.tolerance(LIMIT), what="start"
                )
                again = [await job.submit(x=2), *await job.submit_many([{"x": 3}])]
                await asyncio.sleep(timing.delay(0.5))
                running = list(started)
            finally:
                go_on.set()
            values = [await f.value(timing.tolerance(LIMIT)) for f in [first, *again]]
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert running == [1], violated("a running job's id submitted again: no second run at once")
        assert values == [1, 1, 1], violated("a repeated id's Future gets the running job's result")
        assert started == [1], violated(
            "a running job's id submitted again: no run after it either"
        )
