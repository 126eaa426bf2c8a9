"""`ResultSemantics`: results, waiting and cancellation through a real worker.

Covers docs/results.md (results, waiting and cancelling a queued job): a result is
written before its delivery is settled, reads are non-destructive,
`result_ttl=0` stores nothing (so `.wait()` is refused), running out of a
wait never touches the job, and `future.cancel()` removes a job that has not
started (capability `cancel_queued`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

import upnext
from upnext import ConfigurationError, TaskExecutionError, WaitTimeout
from upnext.broker.protocol import Ack, DeadLetter, SettleItem, SettleOutcome
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    broker_of,
    need,
    violated,
)

__all__ = ["ResultSemantics"]

LIMIT = 5.0


class ResultSemantics(SemanticsBase):
    """Results, waits and cancellation as docs/results.md describes them."""

    @pytest.mark.asyncio
    async def test_result_is_stored_before_the_delivery_is_settled(
        self, make_worker: WorkerFactory, timing: Timing, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every final settle carries its result or finds it already stored (complete or failed)."""
        worker = make_worker()
        broker = await broker_of(worker)
        store = (await worker.client()).store
        checked: list[tuple[str, bool]] = []
        real_settle = broker.settle

        async def settle_checking(items: Sequence[SettleItem]) -> list[SettleOutcome]:
            for item in items:
                if isinstance(item, Ack | DeadLetter):
                    envelope = item.delivery.envelope
                    stored = item.result is not None or (
                        await store.get_result(envelope.id, queue=envelope.queue, wait=0.0)
                        is not None
                    )
                    checked.append((envelope.id, stored))
            return await real_settle(items)

        monkeypatch.setattr(broker, "settle", settle_checking)

        @worker.task
        async def either(fail: bool) -> bool:
            if fail:
                raise ValueError("failed")
            return fail

        async with worker:
            ok = await either.submit(fail=False)
            bad = await either.submit(fail=True)
            await ok.result(timing.tolerance(LIMIT))
            with pytest.raises(TaskExecutionError):
                await bad.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert sorted(checked) == sorted([(ok.job_id, True), (bad.job_id, True)]), violated(
            f"a final result is written before (or with) the settle: {checked}"
        )

    @pytest.mark.asyncio
    async def test_results_are_non_destructive_to_read(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Two waiters both get the result, and it can be read again afterwards."""
        worker = make_worker()
        gate = asyncio.Event()

        @worker.task
        async def answer() -> int:
            await gate.wait()
            return 42

        async with worker:
            future = await answer.submit()
            twin = upnext.Future(answer, future.job_id, future.queue)
            waiters = asyncio.gather(
                future.result(timing.tolerance(LIMIT)), twin.result(timing.tolerance(LIMIT))
            )
            await asyncio.sleep(timing.delay(0.05))
            gate.set()
            first, second = await waiters
            third = await future.result(timing.tolerance(LIMIT))
        assert [r.value for r in (first, second, third)] == [42, 42, 42], violated(
            "results are non-destructive: every waiter and every later read gets them"
        )

    @pytest.mark.asyncio
    async def test_result_ttl_zero_stores_nothing_and_wait_is_refused(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """result_ttl=0 keeps no result, so .wait() is a ConfigurationError at submit."""
        worker = make_worker()
        runs: list[int] = []

        @worker.task(result_ttl=0)
        async def fire_and_forget(x: int) -> int:
            runs.append(x)
            return x

        async with worker:
            with pytest.raises(ConfigurationError):
                await fire_and_forget.wait(x=1)
            future = await fire_and_forget.submit(x=2)
            await worker.join(timeout=timing.tolerance(LIMIT))
            store = (await worker.client()).store
            data = await store.get_result(future.job_id, queue=future.queue, wait=0.0)
        assert runs == [2], violated("a refused .wait() enqueues nothing; submit still runs")
        assert data is None, violated("result_ttl=0 stores no result")

    @pytest.mark.asyncio
    async def test_wait_timeout_raises_and_the_job_goes_on(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """WaitTimeout ends a wait; a timed-out or cancelled wait spares the job."""
        worker = make_worker()
        finished: list[str] = []
        wait = timing.delay(0.1)

        @worker.task
        async def slowish(tag: str) -> str:
            await asyncio.sleep(timing.delay(0.4))
            finished.append(tag)
            return tag

        async with worker:
            with pytest.raises(WaitTimeout) as caught:
                await slowish.wait(tag="wait", wait_timeout=wait)
            future = await slowish.submit(tag="future")
            started = time.monotonic()
            with pytest.raises(WaitTimeout):
                await future.result(wait)
            took = time.monotonic() - started
            result = await future.result(timing.tolerance(LIMIT))
            abandoned = await slowish.submit(tag="cancelled wait")
            waiter = asyncio.create_task(abandoned.result(timing.tolerance(LIMIT)))
            await asyncio.sleep(timing.delay(0.05))
            waiter.cancel()
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert isinstance(caught.value, TimeoutError), violated("WaitTimeout is a TimeoutError")
        assert isinstance(caught.value, upnext.UpNextError)
        assert wait <= took <= wait + timing.tolerance(0.3), violated(
            f"wait_timeout={wait} s is honoured (waited {took:.3f} s)"
        )
        assert result.value == "future", violated("a timed-out wait never touches the job")
        assert sorted(finished) == ["cancelled wait", "future", "wait"], violated(
            "a timed-out or cancelled wait never touches the job: every job completed"
        )

    @pytest.mark.asyncio
    async def test_cancel_removes_a_job_that_has_not_started(
        self, make_worker: WorkerFactory, timing: Timing, upnext_queue: str
    ) -> None:
        """cancel() of a queued or scheduled job returns True; waiters get status "cancelled"."""
        worker = make_worker()
        runs: list[str] = []

        @worker.task
        async def never(tag: str) -> None:
            runs.append(tag)

        async with worker:
            await need(worker, "cancel_queued")
            scheduled = await never.options(delay=timing.delay(0.5)).submit(tag="scheduled")
            # a queue nobody consumes keeps this job queued until it is cancelled
            queued = await never.options(queue=f"{upnext_queue}-idle").submit(tag="queued")
            outcomes = [await scheduled.cancel(), await queued.cancel()]
            errors = []
            for future in (scheduled, queued):
                with pytest.raises(TaskExecutionError) as caught:
                    await future.result(timing.tolerance(LIMIT))
                errors.append(caught.value)
            await asyncio.sleep(timing.delay(0.6))  # past the scheduled job's due time
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert outcomes == [True, True], violated("cancel() of a job not yet started is True")
        assert [e.status for e in errors] == ["cancelled", "cancelled"], violated(
            'waiters of a cancelled job get TaskExecutionError(status="cancelled")'
        )
        assert [e.task_result.status for e in errors] == ["cancelled"] * 2, violated(
            'a cancelled job\'s TaskResult.status is "cancelled"'
        )
        assert runs == [], violated("a cancelled job never runs")

    @pytest.mark.asyncio
    async def test_cancel_returns_false_when_running_or_done(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """cancel() is False for a running or finished job and leaves it alone."""
        worker = make_worker()
        running = asyncio.Event()
        gate = asyncio.Event()

        @worker.task
        async def busy() -> str:
            running.set()
            await gate.wait()
            return "done"

        async with worker:
            await need(worker, "cancel_queued")
            future = await busy.submit()
            await asyncio.wait_for(running.wait(), timing.tolerance(LIMIT))
            while_running = await future.cancel()
            gate.set()
            result = await future.result(timing.tolerance(LIMIT))
            when_done = await future.cancel()
        assert (while_running, when_done) == (False, False), violated(
            "cancel() returns False when the job is running or done"
        )
        assert result.value == "done", violated("a refused cancel leaves the job alone")

    @pytest.mark.asyncio
    async def test_cancel_without_the_capability_is_unsupported(
        self, make_worker: WorkerFactory
    ) -> None:
        """On a broker without cancel_queued, cancel() raises UnsupportedOperation."""
        worker = make_worker()

        @worker.task
        async def anything() -> None: ...

        await need(worker, "cancel_queued", False)
        future = await anything.options(delay=60.0).submit()
        with pytest.raises(upnext.UnsupportedOperation):
            await future.cancel()

    @pytest.mark.asyncio
    async def test_final_statuses(self, make_worker: WorkerFactory, timing: Timing) -> None:
        """A job that succeeds ends "complete"; one that fails (and is dead-lettered) "failed"."""
        worker = make_worker()

        @worker.task
        async def outcome(fail: bool) -> bool:
            if fail:
                raise ValueError("no")
            return True

        async with worker:
            ok = await outcome.wait(fail=False, wait_timeout=timing.tolerance(LIMIT))
            with pytest.raises(TaskExecutionError) as failed:
                await outcome.wait(fail=True, wait_timeout=timing.tolerance(LIMIT))
        assert (ok.status, ok.ok) == ("complete", True), violated("a success is complete")
        assert failed.value.task_result.status == "failed", violated("a failure is failed")
