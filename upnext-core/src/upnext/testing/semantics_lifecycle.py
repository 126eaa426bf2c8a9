"""`LifecycleSemantics`: shutdown, and the stop's effect on jobs, through real workers.

Covers "Shutdown" of docs/semantics.md: leaving ``async with worker:`` stops receiving at
once (a blocked receive is not waited out), finishes in-flight jobs within
`shutdown_grace`, then cancels and releases the rest; a released job is not
an attempt and not a lost run, and another worker runs it at once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import upnext
from upnext import TaskExecutionError
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    capabilities_of,
    dlq_entry,
    violated,
    wait_until,
)

__all__ = ["LifecycleSemantics"]

LIMIT = 5.0


def _handover_task(
    worker: upnext.Worker, label: str, log: list[tuple[str, int, float]]
) -> upnext.Task[[], None]:
    """The same task on several workers: blocks on worker "a", fails on any other."""

    @worker.task(name="semantics.handover")
    async def handover() -> None:
        log.append((label, upnext.get_current_context().attempt, time.monotonic()))
        if label == "a":
            await asyncio.sleep(60.0)
        raise ValueError(f"failed on worker {label}")

    return handover


class LifecycleSemantics(SemanticsBase):
    """Worker start and stop as "Shutdown" in docs/semantics.md describes them."""

    @pytest.mark.asyncio
    async def test_stop_does_not_wait_out_a_blocked_receive(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Leaving `async with worker:` does not wait out a blocked receive's `receive_wait`."""
        worker = make_worker(receive_wait=30.0)
        async with worker:
            await asyncio.sleep(timing.delay(0.1))  # the receiver is now blocked
            leaving = time.monotonic()
        took = time.monotonic() - leaving
        assert took <= timing.tolerance(0.5), violated(
            f"a stopping worker does not wait out its blocked receive (stop took {took:.3f} s)"
        )

    @pytest.mark.asyncio
    async def test_stop_right_after_a_submit_is_prompt(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A stop racing a wake-up of the blocked receive still ends the receive promptly."""
        # a short receive_wait bounds what the bug costs; still far above the 0.5 s allowed
        worker = make_worker(receive_wait=2.0)

        @worker.task
        async def later() -> None: ...

        async with worker:
            await asyncio.sleep(timing.delay(0.1))
            await later.options(delay=60.0).submit()  # wakes the receiver as we leave
            leaving = time.monotonic()
        took = time.monotonic() - leaving
        assert took <= timing.tolerance(0.5), violated(
            f"a stop racing a wake-up still ends the receive promptly (stop took {took:.3f} s)"
        )

    @pytest.mark.asyncio
    async def test_stop_right_after_a_job_completes_is_prompt(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Leaving the worker just after a job's result arrived does not wait out a receive."""
        # a short receive_wait bounds what a failure costs; still far above the 0.5 s allowed
        worker = make_worker(receive_wait=2.0)

        @worker.task
        async def quick() -> int:
            return 1

        async with worker:
            await quick.wait(wait_timeout=timing.tolerance(LIMIT))
            leaving = time.monotonic()
        took = time.monotonic() - leaving
        assert took <= timing.tolerance(0.5), violated(
            f"a stop after a finished job ends the next receive promptly (took {took:.3f} s)"
        )

    @pytest.mark.asyncio
    async def test_in_flight_job_finishes_within_shutdown_grace(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Leaving the worker with a job in flight lets it finish (within shutdown_grace)."""
        worker = make_worker(shutdown_grace=timing.delay(3.0))
        started = asyncio.Event()
        work = timing.delay(0.3)

        @worker.task
        async def busy() -> str:
            started.set()
            await asyncio.sleep(work)
            return "finished"

        async with worker:
            future = await busy.submit()
            await asyncio.wait_for(started.wait(), timing.tolerance(LIMIT))
            leaving = time.monotonic()
        took = time.monotonic() - leaving
        result = await future.result(timing.tolerance(LIMIT))
        assert result.value == "finished", violated("an in-flight job finishes during shutdown")
        assert result.attempts == 1
        assert took <= work + timing.tolerance(0.5), violated(
            f"shutdown waits for the job, not longer ({took:.3f} s for a {work} s job)"
        )

    @pytest.mark.asyncio
    async def test_job_past_grace_is_released_not_counted(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Past shutdown_grace a job is released: the next worker runs it at once as attempt 1."""
        first = make_worker(shutdown_grace=timing.delay(0.1))
        second = make_worker()
        log: list[tuple[str, int, float]] = []
        handover = _handover_task(first, "a", log)
        _handover_task(second, "b", log)

        async with first:
            future = await handover.submit()
            await wait_until(
                lambda: bool(log), within=timing.tolerance(LIMIT), what="the job starts"
            )
        async with second:
            resumed = time.monotonic()
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            await second.join(timeout=timing.tolerance(LIMIT))
            entry = None
            if (await capabilities_of(second)).dlq_access is not None:
                entry = await dlq_entry(second, future.queue, future.job_id)
        runs = [(label, attempt) for label, attempt, _ in log]
        assert runs == [("a", 1), ("b", 1)], violated(
            f"a released job is not an attempt: the next run is attempt 1 ({runs})"
        )
        took = log[1][2] - resumed
        assert took <= timing.tolerance(0.5) + 0.2, violated(
            f"a released job is runnable at once, not after its lease ({took:.3f} s)"
        )
        if entry is not None:
            assert "lost" not in [a.outcome for a in entry.attempts], violated(
                "a released job is not a lost run"
            )
            assert entry.attempts[0].number == 1
