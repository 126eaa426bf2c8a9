"""`ExpirySemantics`: `expires`, a deadline for a job's first attempt, through a real worker.

Covers docs/scheduling.md#expiry: a job whose first attempt has not started
`expires` seconds after it was due is never run, is dead-lettered with
reason ``expired`` and its waiters get `TaskExecutionError` (``failed``)
naming it; a job started in time runs normally; the deadline of a delayed
job runs from when it is due, not from the submit; a retry is not held to
it. A job is kept from starting by a busy worker (concurrency 1), never by
a stopped one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import upnext
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    capabilities_of,
    dlq_entry,
    need_dlq,
    quantized_upper,
    violated,
)

__all__ = ["ExpirySemantics"]

LIMIT = 5.0  # seconds any single wait in these tests may take before it is a failure


class ExpirySemantics(SemanticsBase):
    """Expiry as docs/scheduling.md describes it."""

    @staticmethod
    def _busy_worker(
        make_worker: WorkerFactory, hold: float
    ) -> tuple[upnext.Worker, Callable[[], Awaitable[None]]]:
        """A one-slot worker and a task that holds its slot for `hold` s once started."""
        worker = make_worker(concurrency=1, prefetch=0)
        started = asyncio.Event()

        @worker.task(name="blocker")
        async def blocker() -> None:
            started.set()
            await asyncio.sleep(hold)

        async def occupy() -> None:
            await blocker.submit()
            await asyncio.wait_for(started.wait(), LIMIT)

        return worker, occupy

    @pytest.mark.asyncio
    async def test_a_job_not_started_in_time_is_never_run_and_its_waiter_is_told(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Queued past its deadline behind a busy slot: never run, `failed`, told it expired."""
        worker, occupy = self._busy_worker(make_worker, timing.delay(0.6))
        ran: list[int] = []

        @worker.task(retries=3, expires=timing.delay(0.1))
        async def report(n: int) -> int:
            ran.append(n)
            return n

        async with worker:
            await occupy()
            future = await report.submit(n=1)
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
        assert ran == [], violated("a job not started within `expires` is never run")
        assert caught.value.status == "failed", violated("an expired job's status is failed")
        assert "expired" in (caught.value.error or "").lower(), violated(
            f"the waiter's error names the expiry, got {caught.value.error!r}"
        )
        assert caught.value.task_result.attempts == 0, violated("an expired job used no attempt")

    @pytest.mark.asyncio
    async def test_an_expired_job_is_in_the_dlq_with_reason_expired(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """The entry has reason `expired`, its payload, and no attempt (retries stay unused)."""
        worker, occupy = self._busy_worker(make_worker, timing.delay(0.6))

        @worker.task(retries=2)
        async def notify(user: str) -> str:
            return user

        async with worker:
            await need_dlq(worker)
            await occupy()
            future = await notify.options(expires=timing.delay(0.1)).submit(user="ada")
            with pytest.raises(upnext.TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            entry = await dlq_entry(worker, future.queue, future.job_id)
        assert entry is not None, violated("an expired job is dead-lettered")
        assert entry.reason == "expired", violated(f"its reason is 'expired', got {entry.reason!r}")
        assert entry.payload is not None
        assert entry.payload.kwargs == {"user": "ada"}, violated("the entry keeps the payload")
        assert entry.attempts == [], violated("an expired job has no attempt to show")

    @pytest.mark.asyncio
    async def test_a_job_started_in_time_runs_normally(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`expires` well above the pickup latency: the job runs and completes."""
        worker = make_worker()

        @worker.task(expires=timing.tolerance(LIMIT))
        async def add(a: int, b: int) -> int:
            return a + b

        async with worker:
            result = await add.options(expires=timing.tolerance(LIMIT)).wait(
                a=2, b=3, wait_timeout=timing.tolerance(LIMIT)
            )
        assert (result.value, result.attempts) == (5, 1), violated("a job in time runs normally")

    @pytest.mark.asyncio
    async def test_a_delayed_job_expires_from_when_it_is_due(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """delay > expires and an idle worker: it still runs, as the deadline starts at due time."""
        worker = make_worker()
        delay = timing.delay(1.0)

        @worker.task
        async def remind() -> str:
            return "sent"

        async with worker:
            quantum = (await capabilities_of(worker)).delay_quantum
            expires = quantized_upper(delay, quantum) - delay + timing.tolerance(0.6)
            assert expires < delay  # else this would not tell the two rules apart
            future = await remind.options(delay=delay, expires=expires).submit()
            result = await future.result(timing.tolerance(LIMIT))
        assert result.value == "sent", violated(
            "`expires` counts from when a delayed job is due, not from its submit"
        )

    @pytest.mark.asyncio
    async def test_a_delayed_job_not_started_in_time_after_it_was_due_expires(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Due after its delay, then kept waiting past `expires`: dead-lettered, never run."""
        worker, occupy = self._busy_worker(make_worker, timing.delay(0.8))
        ran: list[bool] = []

        @worker.task
        async def remind() -> None:
            ran.append(True)

        async with worker:
            await occupy()
            options = remind.options(delay=timing.delay(0.1), expires=timing.delay(0.1))
            future = await options.submit()
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
        assert ran == [], violated("a delayed job not started within `expires` of due never runs")
        assert "expired" in (caught.value.error or "").lower(), violated(
            "the waiter is told it expired"
        )

    @pytest.mark.asyncio
    async def test_a_retry_after_the_deadline_still_runs(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """The first attempt started in time; its retry, due after the deadline, runs."""
        worker = make_worker()
        expires = timing.tolerance(1.0)
        attempts: list[int] = []

        @worker.task(retries=1, retry_delay=expires + timing.delay(0.3), expires=expires)
        async def flaky() -> int:
            attempts.append(upnext.get_current_context().attempt)
            if len(attempts) == 1:
                raise ConnectionError("first attempt fails")
            return len(attempts)

        async with worker:
            result = await flaky.wait(wait_timeout=timing.tolerance(LIMIT))
        assert attempts == [1, 2], violated("a job that started once is not expired on retry")
        assert result.attempts == 2
