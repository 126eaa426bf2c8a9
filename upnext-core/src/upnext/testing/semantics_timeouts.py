"""`TimeoutSemantics`: per-attempt timeouts for async and sync tasks.

Covers docs/timeouts.md, its examples included: an async task is cancelled at its deadline; a sync
task's thread is abandoned (not killed), its slot freed and its attempt
counted as timed out on time; a timed-out attempt is retried like an error.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import upnext
from upnext import TaskExecutionError, TaskTimeoutError
from upnext.testing.semantics_base import (
    EARLY_SLACK,
    SemanticsBase,
    Timing,
    WorkerFactory,
    violated,
)

__all__ = ["TimeoutSemantics"]

LIMIT = 5.0


class TimeoutSemantics(SemanticsBase):
    """Timeouts as docs/timeouts.md describes them."""

    @pytest.mark.asyncio
    async def test_seed_default_timeout_is_30_minutes(self, make_worker: WorkerFactory) -> None:
        """Seed: the default timeout is 30 minutes (1800 s); timeout=30.0 sets it per task."""
        worker = make_worker()

        @worker.task
        async def unbounded() -> None: ...

        @worker.task(timeout=30.0)
        async def bounded_task() -> None: ...

        assert unbounded.timeout == 1800.0, violated("the default timeout is 1800 s")
        assert bounded_task.timeout == 30.0, violated("timeout= sets the task's timeout")

    @pytest.mark.asyncio
    async def test_seed_timeout_raises_task_timeout_error(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: a task past its timeout is stopped; waiters get TaskTimeoutError(job_id, error)."""
        worker = make_worker()
        timeout = timing.delay(0.2)
        starts: list[float] = []

        @worker.task(timeout=timeout)
        async def slow_task(data: str) -> str:
            starts.append(time.monotonic())
            await asyncio.sleep(timing.delay(10.0))
            return data

        async with worker:
            with pytest.raises(TaskTimeoutError):
                await slow_task.wait(data="large", wait_timeout=timing.tolerance(LIMIT))
            future = await slow_task.submit(data="large")
            with pytest.raises(TaskTimeoutError) as caught:
                await future.result(timing.tolerance(LIMIT))
            took = time.monotonic() - starts[-1]
        e = caught.value
        assert isinstance(e, TaskExecutionError), violated(
            "TaskTimeoutError is a TaskExecutionError"
        )
        assert e.job_id == future.job_id, violated("e.job_id names the job that timed out")
        assert e.status == "failed", violated('a timed-out job is "failed"')
        assert e.error, violated("e.error says what happened")
        assert e.task_result.error_info is not None
        assert e.task_result.error_info.timed_out, violated("error_info.timed_out is set")
        assert took <= timeout + timing.tolerance(0.5), violated(
            f"a {timeout} s timeout ends the job on time (took {took:.3f} s)"
        )

    @pytest.mark.asyncio
    async def test_async_task_is_cancelled_at_its_deadline(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """At the deadline an async task is cancelled (it sees CancelledError), not left running."""
        worker = make_worker()
        timeout = timing.delay(0.2)
        started: list[float] = []
        cancelled: list[float] = []

        @worker.task(timeout=timeout)
        async def sleeper() -> None:
            started.append(time.monotonic())
            try:
                await asyncio.sleep(timing.delay(10.0))
            except asyncio.CancelledError:
                cancelled.append(time.monotonic())
                raise

        async with worker:
            with pytest.raises(TaskTimeoutError):
                await sleeper.wait(wait_timeout=timing.tolerance(LIMIT))
        assert len(cancelled) == 1, violated("an async task past its timeout is cancelled")
        ran = cancelled[0] - started[0]
        assert timeout - EARLY_SLACK <= ran <= timeout + timing.tolerance(0.3), violated(
            f"the cancellation comes at the deadline ({timeout} s), not at {ran:.3f} s"
        )

    @pytest.mark.asyncio
    async def test_timeout_bounds_each_attempt_and_is_retried(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`timeout` bounds each attempt, and a timed-out attempt is retried like an error."""
        worker = make_worker()
        timeout = timing.delay(0.25)

        @worker.task(timeout=timeout, retries=1, retry_delay=timing.delay(0.02))
        async def slow_then_fast() -> int:
            attempt = upnext.get_current_context().attempt
            # the second attempt alone fits its timeout; both together would not
            await asyncio.sleep(timing.delay(10.0) if attempt == 1 else timeout * 0.6)
            return attempt

        async with worker:
            result = await slow_then_fast.wait(wait_timeout=timing.tolerance(LIMIT))
        assert result.value == 2, violated("a timed-out attempt is retried")
        assert result.attempts == 2

    @pytest.mark.asyncio
    async def test_task_timeout_error_only_when_the_last_attempt_timed_out(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """The caller gets TaskTimeoutError exactly when the last attempt timed out."""
        worker = make_worker()
        timeout = timing.delay(0.15)

        @worker.task(timeout=timeout, retries=1, retry_delay=timing.delay(0.02))
        async def flips(timeout_first: bool) -> None:
            attempt = upnext.get_current_context().attempt
            if (attempt == 1) == timeout_first:
                await asyncio.sleep(timing.delay(10.0))
            raise ValueError(f"attempt {attempt} failed")

        async with worker:
            with pytest.raises(TaskExecutionError) as early:
                await flips.wait(timeout_first=True, wait_timeout=timing.tolerance(LIMIT))
            with pytest.raises(TaskTimeoutError) as late:
                await flips.wait(timeout_first=False, wait_timeout=timing.tolerance(LIMIT))
        assert not isinstance(early.value, TaskTimeoutError), violated(
            "an earlier timeout followed by an error is a plain TaskExecutionError"
        )
        assert early.value.error == "ValueError: attempt 2 failed"
        assert late.value.task_result.attempts == 2

    @pytest.mark.asyncio
    async def test_sync_task_timeout_abandons_the_thread_and_frees_the_slot(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A sync task past its timeout is abandoned on time; its slot runs other jobs meanwhile."""
        worker = make_worker(concurrency=1)
        timeout = timing.delay(0.2)
        release = threading.Event()
        returned: list[bool] = []

        started: list[float] = []

        @worker.task(timeout=timeout)
        def blocking() -> str:
            started.append(time.monotonic())
            release.wait(timing.delay(5.0))
            returned.append(True)
            return "late"

        @worker.task
        def quick() -> str:
            return "quick"

        async with worker:
            try:
                future = await blocking.submit()
                with pytest.raises(TaskTimeoutError):
                    await future.result(timing.tolerance(LIMIT))
                timed_out_after = time.monotonic() - started[0]
                other = await quick.wait(wait_timeout=timing.tolerance(1.0))
                assert not returned, violated("the abandoned thread was not waited for")
            finally:
                release.set()
            await asyncio.sleep(timing.delay(0.1))
            with pytest.raises(TaskTimeoutError):  # its late outcome is discarded
                await future.result(timing.tolerance(LIMIT))
        assert timed_out_after <= timeout + timing.tolerance(0.5), violated(
            f"a sync task's attempt times out on time, not after {timed_out_after:.3f} s"
        )
        assert other.value == "quick", violated(
            "the abandoned thread's slot is freed: other jobs run with concurrency=1"
        )

    @pytest.mark.asyncio
    async def test_too_many_abandoned_threads_ask_for_a_restart(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """More abandoned sync threads than `concurrency` stop the worker as needing a restart."""
        worker = make_worker(concurrency=1)
        release = threading.Event()

        @worker.task(timeout=timing.delay(0.1))
        def stuck() -> None:
            release.wait(timing.delay(5.0))

        try:
            async with worker:
                futures = await stuck.submit_many([{}, {}])
                for future in futures:
                    with pytest.raises(TaskTimeoutError):
                        await future.result(timing.tolerance(LIMIT))
                # what `upnext.run` waits on before it exits with a restart code
                await asyncio.wait_for(worker.wait_stopped(), timing.tolerance(1.0))
                fatal = worker.fatal
        finally:
            release.set()
        assert fatal, violated("a worker with too many abandoned threads must be restarted")

    @pytest.mark.asyncio
    async def test_upnext_run_exits_non_zero_after_too_many_abandoned_threads(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`upnext.run` returns a non-zero exit code when abandoned threads pile up."""
        worker = make_worker(concurrency=1)
        release = threading.Event()
        codes: list[int] = []

        @worker.task(timeout=timing.delay(0.1))
        def stuck() -> None:
            release.wait(timing.delay(5.0))

        runner = threading.Thread(target=lambda: codes.append(upnext.run(worker)), daemon=True)
        runner.start()
        try:
            futures = await stuck.submit_many([{}, {}])
            for future in futures:
                with pytest.raises(TaskTimeoutError):
                    await future.result(timing.tolerance(LIMIT))
            await asyncio.to_thread(runner.join, timing.tolerance(LIMIT))
        finally:
            release.set()
        assert not runner.is_alive(), violated("the worker stops itself when threads pile up")
        assert codes, violated("upnext.run returns an exit code")
        assert codes[0] != 0, violated("a worker that must be restarted exits non-zero")
