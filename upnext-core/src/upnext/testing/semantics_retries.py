"""`RetrySemantics`: attempts, backoff, jitter, `Retry` and `Reject` through a real worker.

Covers docs/retries.md, its examples included (retries, delay and backoff,
the attempt number). Delays are
scaled down (tenths of a second) and measured between attempt starts: a
retry must never start before its delay, and not much after it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import upnext
from upnext.testing.semantics_base import (
    EARLY_SLACK,
    SemanticsBase,
    Timing,
    WorkerFactory,
    capabilities_of,
    gaps,
    need_dlq,
    quantized_upper,
    violated,
)

__all__ = ["RetrySemantics"]

LIMIT = 5.0  # seconds any single wait in these tests may take before it is a failure


class RetrySemantics(SemanticsBase):
    """Retries as docs/retries.md describes them."""

    @pytest.mark.asyncio
    async def test_seed_retries_3_runs_attempts_1_to_4(
        self, make_worker: WorkerFactory, timing: Timing, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Seed: retries=3 runs attempts 1..4 and ctx prints "Attempt n of 4"."""
        worker = make_worker()

        @worker.task(retries=3, retry_delay=timing.delay(0.02), retry_backoff=1.0)
        async def resilient_task() -> None:
            ctx = upnext.get_current_context()
            print(f"Attempt {ctx.attempt} of {ctx.max_attempts}")
            raise ValueError("still failing")

        async with worker:
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await resilient_task.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        printed = [line for line in capsys.readouterr().out.splitlines() if "Attempt" in line]
        assert printed == [f"Attempt {n} of 4" for n in (1, 2, 3, 4)], violated(
            "retries=3 means 4 attempts, numbered 1..4, with max_attempts == 4"
        )
        assert caught.value.task_result.attempts == 4, violated(
            "TaskResult.attempts is the final ctx.attempt"
        )

    @pytest.mark.asyncio
    async def test_seed_retry_delay_and_backoff_are_measured(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: retry_delay doubles with retry_backoff=2 (0.1, 0.2, 0.4 s), never early."""
        worker = make_worker()
        starts: list[float] = []

        @worker.task(retries=3, retry_delay=timing.delay(0.1), retry_backoff=2.0)
        async def api_call() -> None:
            starts.append(time.monotonic())
            raise ConnectionError("flaky")

        async with worker:
            with pytest.raises(upnext.TaskExecutionError):
                await api_call.wait(wait_timeout=timing.tolerance(LIMIT))
        quantum = (await capabilities_of(worker)).delay_quantum
        nominal = [timing.delay(d) for d in (0.1, 0.2, 0.4)]
        measured = gaps(starts)
        assert len(measured) == 3, violated("retries=3 runs three retries")
        for gap, want in zip(measured, nominal, strict=True):
            assert gap >= want - EARLY_SLACK, violated(
                f"a retry never runs before its delay: waited {gap:.3f} s of {want:.3f} s"
            )
            upper = quantized_upper(want, quantum) + timing.tolerance(0.15)
            assert gap <= upper, violated(
                f"retry after {want:.3f} s ran {gap - want:.3f} s late (allowed {upper - want:.3f})"
            )

    @pytest.mark.asyncio
    async def test_seed_backoff_schedule_doubles_five_times(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: 5 retries from a base delay doubling each time (2,4,8,16,32 scaled by 1/100)."""
        worker = make_worker()
        delays: list[float | None] = []
        base = timing.delay(0.02)

        @worker.task(
            retries=5,
            retry_delay=base,
            retry_backoff=2.0,
            on_retry=lambda event: delays.append(event.next_delay),
        )
        async def api_call() -> None:
            raise ConnectionError("flaky")

        async with worker:
            with pytest.raises(upnext.TaskExecutionError):
                await api_call.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        expected = [base * 2**n for n in range(5)]
        assert delays == pytest.approx(expected), violated(
            "delay before retry n is retry_delay * retry_backoff**(n-1)"
        )

    @pytest.mark.asyncio
    async def test_retry_delay_max_caps_the_backoff(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Delay before retry n is min(retry_delay * backoff**(n-1), retry_delay_max)."""
        worker = make_worker()
        delays: list[float | None] = []
        starts: list[float] = []

        @worker.task(
            retries=3,
            retry_delay=timing.delay(0.05),
            retry_backoff=3.0,
            retry_delay_max=timing.delay(0.2),
            on_retry=lambda event: delays.append(event.next_delay),
        )
        async def capped() -> None:
            starts.append(time.monotonic())
            raise ConnectionError("flaky")

        async with worker:
            with pytest.raises(upnext.TaskExecutionError):
                await capped.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        expected = [timing.delay(d) for d in (0.05, 0.15, 0.2)]
        assert delays == pytest.approx(expected), violated(
            "retry_delay_max caps the exponential delay (0.05, 0.15, then 0.2 not 0.45)"
        )
        for gap, want in zip(gaps(starts), expected, strict=True):
            assert gap >= want - EARLY_SLACK, violated("a capped retry never runs early")

    @pytest.mark.asyncio
    async def test_jitter_never_goes_below_the_nominal_delay(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """With retry_jitter a delay stretches into [nominal, nominal*(1+jitter)], never less."""
        worker = make_worker()
        delays: list[float] = []
        starts: list[float] = []

        def record(event: upnext.HookEvent) -> None:
            assert event.next_delay is not None
            delays.append(event.next_delay)

        @worker.task(
            retries=4,
            retry_delay=timing.delay(0.03),
            retry_backoff=1.0,
            retry_jitter=1.0,
            on_retry=record,
        )
        async def jittery() -> None:
            starts.append(time.monotonic())
            raise ConnectionError("flaky")

        async with worker:
            with pytest.raises(upnext.TaskExecutionError):
                await jittery.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        nominal = timing.delay(0.03)
        assert len(delays) == 4, violated("each retry announces its delay")
        for delay in delays:
            assert nominal - 1e-9 <= delay <= 2 * nominal + 1e-9, violated(
                f"jitter keeps the delay in [nominal, nominal*(1+jitter)]: got {delay:.4f} s"
            )
        for gap, want in zip(gaps(starts), delays, strict=True):
            assert gap >= want - EARLY_SLACK, violated("a jittered retry never runs early")

    @pytest.mark.asyncio
    async def test_retry_runs_no_later_than_half_a_second_after_its_delay(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A retry never runs before its delay and, under light load, within 0.5 s after it."""
        worker = make_worker()
        starts: list[float] = []
        delay = timing.delay(0.3)

        @worker.task(retries=1, retry_delay=delay)
        async def once_flaky() -> int:
            starts.append(time.monotonic())
            if len(starts) == 1:
                raise ConnectionError("first attempt fails")
            return len(starts)

        async with worker:
            result = await once_flaky.wait(wait_timeout=timing.tolerance(LIMIT))
        quantum = (await capabilities_of(worker)).delay_quantum
        [gap] = gaps(starts)
        assert result.value == 2, violated("the retry ran and its value was returned")
        assert gap >= delay - EARLY_SLACK, violated(f"retry ran {delay - gap:.3f} s early")
        assert gap <= quantized_upper(delay, quantum) + timing.tolerance(0.5), violated(
            f"a retry runs within 0.5 s of its delay; it took {gap - delay:.3f} s more"
        )

    @pytest.mark.asyncio
    async def test_attempt_never_exceeds_max_attempts(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """max_attempts = retries + 1; ctx.attempt is 1-based and never exceeds it."""
        worker = make_worker()
        seen: list[tuple[int, int]] = []

        @worker.task(retries=2, retry_delay=timing.delay(0.02), retry_backoff=1.0)
        async def always_fails() -> None:
            ctx = upnext.get_current_context()
            seen.append((ctx.attempt, ctx.max_attempts))
            raise RuntimeError(f"attempt {ctx.attempt}")

        async with worker:
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await always_fails.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert seen == [(1, 3), (2, 3), (3, 3)], violated(
            "attempts run 1..max_attempts (retries + 1) and no further"
        )
        assert caught.value.error == "RuntimeError: attempt 3", violated(
            "the final error is the last attempt's"
        )

    @pytest.mark.asyncio
    async def test_retry_request_counts_as_an_attempt_and_honours_its_delay(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`raise upnext.Retry(delay)` retries after `delay`, not retry_delay, using an attempt."""
        worker = make_worker()
        starts: list[float] = []
        delay = timing.delay(0.2)

        @worker.task(retries=2, retry_delay=60.0)
        async def polls() -> int:
            starts.append(time.monotonic())
            ctx = upnext.get_current_context()
            if ctx.attempt == 1:
                raise upnext.Retry(delay=delay)
            return ctx.attempt

        async with worker:
            result = await polls.wait(wait_timeout=timing.tolerance(LIMIT))
        quantum = (await capabilities_of(worker)).delay_quantum
        [gap] = gaps(starts)
        assert (result.value, result.attempts) == (2, 2), violated(
            "a Retry counts as an attempt: the next run is attempt 2"
        )
        assert (
            delay - EARLY_SLACK <= gap <= quantized_upper(delay, quantum) + timing.tolerance(0.5)
        ), violated(f"Retry(delay={delay}) is honoured (measured {gap:.3f} s)")

    @pytest.mark.asyncio
    async def test_retry_request_without_a_delay_retries_now(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`raise upnext.Retry()` with no delay retries now, whatever retry_delay says."""
        worker = make_worker()
        starts: list[float] = []

        @worker.task(retries=1, retry_delay=60.0)
        async def again() -> int:
            starts.append(time.monotonic())
            if len(starts) == 1:
                raise upnext.Retry()
            return len(starts)

        async with worker:
            future = await again.submit()
            try:
                await future.result(timing.tolerance(1.0))
            except upnext.WaitTimeout:
                pytest.fail(violated("Retry() without a delay retries now, not after retry_delay"))
        [gap] = gaps(starts)
        assert gap <= timing.tolerance(0.5), violated(f"Retry() retried after {gap:.3f} s")

    @pytest.mark.asyncio
    async def test_retry_request_on_the_last_attempt_fails_the_job(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A Retry raised on the last attempt ends the job failed: attempts are never exceeded."""
        worker = make_worker()
        runs: list[int] = []

        @worker.task(retries=1)
        async def keeps_asking() -> None:
            runs.append(upnext.get_current_context().attempt)
            raise upnext.Retry(delay=timing.delay(0.02))

        async with worker:
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await keeps_asking.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert runs == [1, 2], violated("Retry uses attempts like any failure")
        assert caught.value.status == "failed"
        assert caught.value.task_result.attempts == 2

    @pytest.mark.asyncio
    async def test_reject_dead_letters_at_once_keeping_attempts_unused(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`raise upnext.Reject(reason)` dead-letters now; the remaining attempts stay unused."""
        worker = make_worker()
        runs: list[int] = []

        @worker.task(retries=3, retry_delay=timing.delay(0.02))
        async def validates(order_id: int) -> None:
            runs.append(order_id)
            raise upnext.Reject("order does not exist")

        async with worker:
            dlq = await need_dlq(worker)
            future = await validates.submit(order_id=7)
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
            page = await worker.dlq.list(queue=future.queue)
            dead = await dlq.dlq_count(future.queue)
        assert runs == [7], violated("a rejected job is not retried")
        assert caught.value.status == "failed"
        assert caught.value.task_result.attempts == 1
        [entry] = [e for e in page.items if e.job_id == future.job_id]
        assert [a.outcome for a in entry.attempts] == ["rejected"], violated(
            "the DLQ entry records the one rejected attempt"
        )
        assert entry.error is not None
        assert "order does not exist" in entry.error.message
        assert dead == 1, violated("the rejected job is in the dead-letter queue once")

    @pytest.mark.asyncio
    async def test_default_retry_settings(self, make_worker: WorkerFactory, timing: Timing) -> None:
        """Defaults: retries 0 (one attempt), retry_delay 1.0 s, retry_backoff 2.0."""
        worker = make_worker()
        runs: list[Any] = []

        @worker.task
        async def plain() -> None:
            runs.append(upnext.get_current_context().max_attempts)
            raise ValueError("no retries by default")

        policy = plain.policy
        assert (policy.retries, policy.delay, policy.backoff) == (0, 1.0, 2.0), violated(
            "the seed's table: retries 0, retry_delay 1.0, retry_backoff 2.0"
        )
        async with worker:
            with pytest.raises(upnext.TaskExecutionError):
                await plain.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert runs == [1], violated("with retries=0 a failing job runs exactly once")
