"""`MiddlewareSemantics`: the job pipeline's decisions and wrapping, through a real worker.

Middleware given with ``Worker(middleware=[...])`` or by a plugin's entry
point delays a job (it runs later, no attempt charged), releases it (given
back uncounted), skips it (settled ``cancelled``: no retry, no dead letter)
and wraps a task's call; a running job cancelled by the user settles
``cancelled`` too. Every backend runs these through its own broker.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from upnext import TaskExecutionError, get_current_context
from upnext.middleware import CallNext, Decision, Delay, Job, Middleware, Release, Skip
from upnext.testing import entry_point_plugin
from upnext.testing.semantics_base import (
    EARLY_SLACK,
    SemanticsBase,
    Timing,
    WorkerFactory,
    bounded,
    capabilities_of,
    dlq_entry,
    quantized_upper,
    violated,
)

__all__ = ["MiddlewareSemantics"]

LIMIT = 5.0


class OnceFor(Middleware):
    """Answers `decision` the first time it sees each job of `function`, then lets it run."""

    def __init__(self, function: str, decision: Decision) -> None:
        self.function = function
        self.decision = decision
        self.seen: list[tuple[str, int]] = []  # (job id, attempt) of every before_run

    async def before_run(self, job: Job) -> Decision | None:
        """The decision once per job, then None."""
        if job.function != self.function:
            return None
        first = all(job_id != job.id for job_id, _ in self.seen)
        self.seen.append((job.id, job.attempt))
        return self.decision if first else None


class Doubling(Middleware):
    """Doubles the value of `function`'s jobs, and notes the context the body ran in."""

    def __init__(self, function: str) -> None:
        self.function = function

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Run the rest, then double its value."""
        value = await call_next()
        if job.function != self.function:
            return value
        assert get_current_context().job_id == job.id, violated("around_run sees the job context")
        return value * 2


class MiddlewareSemantics(SemanticsBase):
    """Middleware decisions and wrapping on your broker."""

    @pytest.mark.asyncio
    async def test_a_delayed_job_runs_later_without_charging_an_attempt(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """before_run answering Delay(d): the job runs >= d later, still on attempt 1."""
        delay = timing.delay(0.3)
        middleware = OnceFor("semantics.delayed", Delay(delay))
        worker = make_worker(middleware=[middleware])
        ran: list[tuple[float, int]] = []

        @worker.task(name="semantics.delayed", retries=2)
        async def delayed() -> int:
            ran.append((time.monotonic(), get_current_context().attempt))
            return 1

        async with worker:
            quantum = (await capabilities_of(worker)).delay_quantum
            start = time.monotonic()
            result = await (await delayed.submit()).result(timing.tolerance(LIMIT))
        assert result.value == 1
        assert [attempt for _, attempt in ran] == [1], violated("a delay charges no attempt")
        assert result.attempts == 1, violated("a delayed job completes on attempt 1")
        gap = ran[0][0] - start
        assert gap >= delay - EARLY_SLACK, violated(f"a delayed job ran {delay - gap:.3f} s early")
        assert gap <= quantized_upper(delay, quantum) + timing.tolerance(1.0), violated(
            f"a job delayed {delay:.2f} s ran {gap:.3f} s after submission"
        )

    @pytest.mark.asyncio
    async def test_a_released_job_runs_again_uncounted(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """before_run answering Release(): the job is given back and runs, on attempt 1."""
        middleware = OnceFor("semantics.released", Release())
        worker = make_worker(middleware=[middleware])

        @worker.task(name="semantics.released")
        async def released() -> int:
            return get_current_context().attempt

        async with worker:
            future = await released.submit()
            result = await future.result(timing.tolerance(LIMIT))
        assert result.value == 1, violated("a released job runs on its first attempt")
        assert middleware.seen == [(future.job_id, 1), (future.job_id, 1)], violated(
            f"a released job comes back once, uncounted; before_run saw {middleware.seen}"
        )

    @pytest.mark.asyncio
    async def test_a_skipped_job_settles_cancelled_without_running(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """before_run answering Skip(reason): status cancelled, body never run, no DLQ entry."""
        worker = make_worker(middleware=[OnceFor("semantics.skipped", Skip("not today"))])
        ran: list[int] = []

        @worker.task(name="semantics.skipped", retries=2)
        async def skipped() -> None:
            ran.append(1)

        async with worker:
            future = await skipped.submit()
            with pytest.raises(TaskExecutionError) as caught:
                await future.value(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
            if (await capabilities_of(worker)).dlq_access is not None:
                entry = await dlq_entry(worker, future.queue, future.job_id)
                assert entry is None, violated("a skipped job is not dead-lettered")
        assert caught.value.status == "cancelled", violated("a skipped job settles cancelled")
        assert "not today" in str(caught.value.error), violated("the skip's reason is kept")
        assert ran == [], violated("a skipped job's body never runs")

    @pytest.mark.asyncio
    async def test_around_run_wraps_the_call(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """around_run's return value is the job's result; other tasks are untouched."""
        worker = make_worker(middleware=[Doubling("semantics.doubled")])

        @worker.task(name="semantics.doubled")
        async def doubled(x: int) -> int:
            return x

        @worker.task(name="semantics.plain")
        async def plain(x: int) -> int:
            return x

        async with worker:
            assert await (await doubled.submit(21)).value(timing.tolerance(LIMIT)) == 42
            assert await (await plain.submit(21)).value(timing.tolerance(LIMIT)) == 21

    @pytest.mark.asyncio
    async def test_a_user_cancel_settles_a_running_job_cancelled(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Consumer.cancel_job(id): the running body is cancelled, no retry, status cancelled."""
        worker = make_worker()
        started = asyncio.Event()
        runs: list[int] = []

        @worker.task(name="semantics.cancelled", retries=2)
        async def long() -> None:
            runs.append(1)
            started.set()
            await asyncio.sleep(timing.delay(30))

        async with worker:
            future = await long.submit()
            await bounded(started.wait(), timing.tolerance(LIMIT), "the job starts")
            assert worker.consumer is not None
            assert [job.job_id for job in worker.consumer.running_jobs()] == [future.job_id]
            assert worker.consumer.cancel_job(future.job_id), violated("a running job is found")
            with pytest.raises(TaskExecutionError) as caught:
                await future.value(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert caught.value.status == "cancelled", violated("a user cancel settles cancelled")
        assert runs == [1], violated("a job cancelled by the user is not retried")

    @pytest.mark.asyncio
    async def test_entry_point_plugin_delays_one_task_and_wraps_another(
        self,
        make_worker: WorkerFactory,
        timing: Timing,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A plugin installed by entry point delays one task's jobs and wraps another's call."""
        entry_point_plugin.install(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        worker = make_worker(load_plugins=True)
        started: list[float] = []

        @worker.task(name=entry_point_plugin.DELAYED_TASK)
        async def delayed() -> int:
            started.append(time.time())
            return get_current_context().attempt

        @worker.task(name=entry_point_plugin.WRAPPED_TASK)
        async def wrapped() -> str:
            return "value"

        async with worker:
            submitted = time.time()
            late = await delayed.submit()
            value = await (await wrapped.submit()).value(timing.tolerance(LIMIT))
            attempt = await late.value(timing.tolerance(LIMIT))
        assert value == "wrapped(value)", violated("the plugin's around_run wraps the call")
        assert attempt == 1, violated("the plugin's delay charges no attempt")
        assert started[0] >= submitted + entry_point_plugin.DELAY - EARLY_SLACK, violated(
            "the plugin's delayed job runs no sooner than its delay after submission"
        )
