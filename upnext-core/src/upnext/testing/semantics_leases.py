"""`LeaseSemantics`: heartbeats, lost runs and `max_lost_runs` through a real worker.

Covers "Leases and heartbeats" and "Lost runs" of docs/semantics.md. A dead worker is simulated with
the broker protocol itself: the test receives the job under a short lease
and never settles it, as a worker killed mid-job would. Needs the
`timed_leases` capability (a lease that expires on its own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

import upnext
from upnext import LeaseLost, TaskExecutionError
from upnext.broker.protocol import Delivery, SettleItem, SettleOutcome
from upnext.testing._support import receive_exactly
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    capabilities_of,
    dlq_entry,
    need,
    violated,
    wait_until,
)

__all__ = ["LeaseSemantics"]

LIMIT = 5.0
NO_WORKER_WARNING = "ignore:job submitted to:RuntimeWarning"


async def _hand_out_and_drop(worker: upnext.Worker, lease: float, within: float) -> None:
    """Take the worker's next job under `lease` and never settle it (a killed worker)."""
    broker = (await worker.client()).broker
    await receive_exactly(
        broker, [worker.name], 1, within=within, lease=lease, what="the submitted job"
    )


class LeaseSemantics(SemanticsBase):
    """Leases and lost runs as docs/semantics.md describes them."""

    @pytest.mark.asyncio
    async def test_default_lease_is_30_seconds(self, make_worker: WorkerFactory) -> None:
        """A worker receives with a 30 s lease unless told otherwise."""
        assert make_worker().lease == 30.0, violated("the default lease is 30 s")

    @pytest.mark.asyncio
    async def test_job_outliving_its_lease_is_not_redelivered_while_heartbeating(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A job running longer than the lease runs once: the worker's heartbeat extends it."""
        lease = timing.delay(0.3)
        first = make_worker(lease=lease, concurrency=2)
        second = make_worker(lease=lease, concurrency=2)
        runs: list[str] = []

        for worker in (first, second):

            @worker.task(name="semantics.long_job")
            async def long_job() -> int:
                runs.append(upnext.get_current_context().job_id)
                await asyncio.sleep(timing.delay(1.0))
                return len(runs)

        async with first, second:
            await need(first, "timed_leases")
            result = await long_job.wait(wait_timeout=timing.tolerance(LIMIT))
            await asyncio.sleep(lease)  # a redelivery would show up now at the latest
            await first.join(timeout=timing.tolerance(LIMIT))
        assert len(runs) == 1, violated(
            f"a job whose lease is extended is not handed out again (ran {len(runs)} times)"
        )
        assert result.value == 1

    @pytest.mark.asyncio
    async def test_finished_job_keeps_its_lease_while_its_settle_waits(
        self, make_worker: WorkerFactory, timing: Timing, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A job done but not yet settled (a slow settle) stays leased: it runs once."""
        lease = timing.delay(0.3)
        worker = make_worker(lease=lease)
        runs: list[int] = []

        @worker.task
        async def quick() -> int:
            runs.append(upnext.get_current_context().attempt)
            return len(runs)

        async with worker:
            broker = await need(worker, "timed_leases")
            real_settle = broker.settle

            async def slow_settle(items: Sequence[SettleItem]) -> list[SettleOutcome]:
                await asyncio.sleep(lease * 3)  # the result is ready; the lease would run out
                return await real_settle(items)

            monkeypatch.setattr(broker, "settle", slow_settle)
            result = await quick.wait(wait_timeout=timing.tolerance(LIMIT))
            await asyncio.sleep(lease)  # a rerun would show up now at the latest
        assert runs == [1], violated(
            f"a finished job's lease is extended until its settle is done (ran {len(runs)} times)"
        )
        assert result.value == 1

    @pytest.mark.asyncio
    async def test_job_handed_out_after_a_long_blocked_receive_keeps_its_lease(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A job arriving after the receiver blocked longer than the lease still runs once."""
        lease = timing.delay(0.3)
        worker = make_worker(lease=lease)
        runs: list[int] = []

        @worker.task
        async def long_job() -> int:
            runs.append(upnext.get_current_context().attempt)
            await asyncio.sleep(lease * 2)
            return len(runs)

        async with worker:
            await need(worker, "timed_leases")
            await asyncio.sleep(lease * 2)  # the worker's receive has blocked past a lease
            result = await long_job.wait(wait_timeout=timing.tolerance(LIMIT))
        assert runs == [1], violated(
            f"a job's lease starts when it is handed out, not when receive began: ran {runs}"
        )
        assert result.value == 1

    @pytest.mark.filterwarnings(NO_WORKER_WARNING)
    @pytest.mark.asyncio
    async def test_lost_run_is_recorded_and_is_not_an_attempt(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A run whose worker died is recorded as outcome "lost"; the rerun is still attempt 1."""
        worker = make_worker()
        lease = timing.delay(0.2)
        attempts: list[int] = []

        @worker.task
        async def fragile() -> None:
            attempts.append(upnext.get_current_context().attempt)
            raise ValueError("fails after the lost run")

        await need(worker, "timed_leases")
        future = await fragile.submit()
        dropped = time.monotonic()
        await _hand_out_and_drop(worker, lease, timing.tolerance(2.0))
        async with worker:
            with pytest.raises(TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            rerun_after = time.monotonic() - dropped
            await worker.join(timeout=timing.tolerance(LIMIT))
            entry = None
            if (await capabilities_of(worker)).dlq_access is not None:
                entry = await dlq_entry(worker, future.queue, future.job_id)
        assert attempts == [1], violated("a lost run is not an attempt: the rerun is attempt 1")
        assert caught.value.task_result.attempts == 1
        assert rerun_after <= lease + timing.tolerance(0.5) + timing.tolerance(0.5), violated(
            f"an orphaned job is runnable again within lease + 0.5 s (took {rerun_after:.3f} s)"
        )
        if entry is not None:
            outcomes = [(a.number, a.outcome) for a in entry.attempts]
            assert outcomes == [(1, "lost"), (1, "error")], violated(
                f"the attempt history records the lost run, then the attempt: {outcomes}"
            )

    @pytest.mark.filterwarnings(NO_WORKER_WARNING)
    @pytest.mark.asyncio
    async def test_too_many_lost_runs_dead_letter_with_reason_worker_lost(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """After max_lost_runs lost runs the job is dead-lettered, reason "worker lost", unrun."""
        worker = make_worker()
        lease = timing.delay(0.2)
        runs: list[int] = []

        @worker.task(max_lost_runs=1, retries=3)
        async def kills_its_worker() -> None:
            runs.append(1)

        await need(worker, "timed_leases")
        await need(worker, "counts_deliveries")
        future = await kills_its_worker.submit()
        for _ in range(2):  # two workers die holding it: one more than max_lost_runs
            await _hand_out_and_drop(worker, lease, lease + timing.tolerance(2.0))
        async with worker:
            with pytest.raises(TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
            entry = None
            if (await capabilities_of(worker)).dlq_access is not None:
                entry = await dlq_entry(worker, future.queue, future.job_id)
        assert runs == [], violated("a job over max_lost_runs is not run again")
        assert caught.value.status == "failed"
        assert caught.value.task_result.attempts == 0, violated("lost runs are not attempts")
        if entry is not None:
            assert entry.reason == "worker lost", violated('the DLQ reason is "worker lost"')
            assert [a.outcome for a in entry.attempts] == ["lost", "lost"], violated(
                "each lost run is in the attempt history"
            )

    @pytest.mark.asyncio
    async def test_job_whose_lease_is_lost_is_cancelled_and_its_outcome_discarded(
        self, make_worker: WorkerFactory, timing: Timing, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A job whose lease could not be extended is cancelled locally, then runs again."""
        lease = timing.delay(0.3)
        worker = make_worker(lease=lease)
        runs: list[int] = []
        cancelled: list[int] = []

        @worker.task
        async def long_job() -> int:
            runs.append(upnext.get_current_context().attempt)
            if len(runs) == 1:
                try:
                    await asyncio.sleep(timing.delay(3.0))
                except asyncio.CancelledError:
                    cancelled.append(1)
                    raise
                return -1  # the cancellation must stop it before this
            return len(runs)

        async def refuse(deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
            return [LeaseLost("refused by the test") for _ in deliveries]

        async with worker:
            broker = await need(worker, "timed_leases")
            real_extend = broker.extend
            monkeypatch.setattr(broker, "extend", refuse)
            future = await long_job.submit()
            await wait_until(
                lambda: bool(cancelled),
                within=lease + timing.tolerance(1.0),
                what="a job whose lease could not be extended is cancelled",
            )
            monkeypatch.setattr(broker, "extend", real_extend)
            result = await future.result(timing.tolerance(LIMIT))
        assert result.value == 2, violated("the cancelled run's outcome is discarded; it reruns")
        assert runs == [1, 1], violated("the lost run is not an attempt: the rerun is attempt 1")
