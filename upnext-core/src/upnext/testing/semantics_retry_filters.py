"""`RetryFilterSemantics`: `retry_on` and `dont_retry_on` through a real worker.

Covers docs/retries.md#retry-filters: an exception outside `retry_on` or
inside `dont_retry_on` dead-letters the job at once with reason
``not retryable`` (the attempt counted), any other is retried as usual;
`Retry` and `Reject` keep their meaning whatever the filters say; a timed-out
attempt is judged as the built-in `TimeoutError`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import upnext
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    dlq_entry,
    need_dlq,
    violated,
)

__all__ = ["RetryFilterSemantics"]

LIMIT = 5.0  # seconds any single wait in these tests may take before it is a failure


async def _reason(worker: upnext.Worker, future: upnext.Future[Any]) -> str:
    entry = await dlq_entry(worker, future.queue, future.job_id)
    assert entry is not None, violated(f"failed job {future.job_id} must have a DLQ entry")
    return entry.reason


class RetryFilterSemantics(SemanticsBase):
    """Retry filters as docs/retries.md describes them."""

    @pytest.mark.asyncio
    async def test_retry_on_retries_a_listed_exception(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """retry_on=(ConnectionError,): a ConnectionError is retried, then the job completes."""
        worker = make_worker()
        attempts: list[int] = []

        @worker.task(retries=3, retry_delay=timing.delay(0.02), retry_on=(ConnectionError,))
        async def fetch() -> int:
            attempts.append(upnext.get_current_context().attempt)
            if len(attempts) < 3:
                raise ConnectionRefusedError("down")  # a subclass counts
            return len(attempts)

        async with worker:
            result = await fetch.wait(wait_timeout=timing.tolerance(LIMIT))
        assert attempts == [1, 2, 3], violated("an exception in retry_on is retried")
        assert result.attempts == 3

    @pytest.mark.asyncio
    async def test_retry_on_dead_letters_anything_else_at_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """retry_on=ConnectionError and a ValueError: one attempt, reason `not retryable`."""
        worker = make_worker()
        attempts: list[int] = []

        @worker.task(retries=3, retry_delay=timing.delay(0.02), retry_on=ConnectionError)
        async def parse() -> None:
            attempts.append(upnext.get_current_context().attempt)
            raise ValueError("bad input")

        async with worker:
            await need_dlq(worker)
            future = await parse.submit()
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            reason = await _reason(worker, future)
        assert attempts == [1], violated("an exception outside retry_on is not retried")
        assert caught.value.task_result.attempts == 1, violated("the attempt still counts")
        assert "ValueError: bad input" in (caught.value.error or "")
        assert reason == "not retryable", violated(f"reason 'not retryable', got {reason!r}")

    @pytest.mark.asyncio
    async def test_dont_retry_on_dead_letters_a_listed_exception_at_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """dont_retry_on=(ValueError,): a ValueError ends the job after one attempt."""
        worker = make_worker()
        attempts: list[int] = []

        @worker.task(retries=3, retry_delay=timing.delay(0.02), dont_retry_on=(ValueError,))
        async def parse() -> None:
            attempts.append(upnext.get_current_context().attempt)
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad byte")  # a ValueError

        async with worker:
            await need_dlq(worker)
            future = await parse.submit()
            with pytest.raises(upnext.TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            reason = await _reason(worker, future)
        assert attempts == [1], violated("an exception in dont_retry_on is not retried")
        assert reason == "not retryable", violated(f"reason 'not retryable', got {reason!r}")

    @pytest.mark.asyncio
    async def test_dont_retry_on_retries_anything_else_until_exhausted(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """dont_retry_on=(ValueError,) and a KeyError: every attempt, `retries exhausted`."""
        worker = make_worker()
        attempts: list[int] = []

        @worker.task(retries=2, retry_delay=timing.delay(0.02), dont_retry_on=(ValueError,))
        async def lookup() -> None:
            attempts.append(upnext.get_current_context().attempt)
            raise KeyError("missing")

        async with worker:
            await need_dlq(worker)
            future = await lookup.submit()
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            reason = await _reason(worker, future)
        assert attempts == [1, 2, 3], violated("an exception outside dont_retry_on is retried")
        assert caught.value.task_result.attempts == 3
        assert reason == "retries exhausted", violated(f"got reason {reason!r}")

    @pytest.mark.asyncio
    async def test_retry_and_reject_keep_their_meaning_whatever_the_filters(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`Retry` retries despite dont_retry_on=Exception; `Reject` rejects despite retry_on."""
        worker = make_worker()
        attempts: list[int] = []

        @worker.task(retries=2, dont_retry_on=Exception)
        async def asks() -> int:
            attempts.append(upnext.get_current_context().attempt)
            if len(attempts) == 1:
                raise upnext.Retry(delay=timing.delay(0.02))
            return len(attempts)

        @worker.task(retries=2, retry_on=(upnext.Reject, ValueError))
        async def refuses() -> None:
            raise upnext.Reject("no")

        async with worker:
            await need_dlq(worker)
            result = await asks.wait(wait_timeout=timing.tolerance(LIMIT))
            future = await refuses.submit()
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            reason = await _reason(worker, future)
        assert (attempts, result.attempts) == ([1, 2], 2), violated("Retry always retries")
        assert caught.value.task_result.attempts == 1
        assert reason == "rejected", violated(f"Reject always rejects, got reason {reason!r}")

    @pytest.mark.asyncio
    async def test_a_timeout_is_judged_as_timeout_error(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """retry_on=TimeoutError retries a timed-out attempt; retry_on=ConnectionError does not."""
        worker = make_worker()
        slow: dict[str, list[int]] = {"kept": [], "dropped": []}

        async def overrun(kind: str) -> str:
            slow[kind].append(upnext.get_current_context().attempt)
            if len(slow[kind]) == 1:
                await asyncio.sleep(timing.delay(2.0))
            return kind

        delay, timeout = timing.delay(0.02), timing.delay(0.2)
        kept = worker.task(
            name="kept", retries=2, retry_delay=delay, timeout=timeout, retry_on=TimeoutError
        )(overrun)
        dropped = worker.task(
            name="dropped", retries=2, retry_delay=delay, timeout=timeout, retry_on=ConnectionError
        )(overrun)

        async with worker:
            assert (await kept.wait("kept", wait_timeout=timing.tolerance(LIMIT))).attempts == 2
            with pytest.raises(upnext.TaskTimeoutError) as caught:
                await dropped.wait("dropped", wait_timeout=timing.tolerance(LIMIT))
        assert slow == {"kept": [1, 2], "dropped": [1]}, violated(
            "a timed-out attempt is a TimeoutError to retry_on (not a ConnectionError)"
        )
        assert caught.value.task_result.attempts == 1
