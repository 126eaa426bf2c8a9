"""`UniqueJobSemantics`: unique, throttled and debounced jobs, through a real worker.

Covers docs/scheduling.md#unique-jobs: a job id (chosen, an idempotency key,
or made by a task's `unique_key`) submitted again while its job is queued,
scheduled, running or its result is kept returns a Future for that job,
marked `duplicate`, and enqueues nothing; once the result has expired the id
is free again. `unique_for` drops repeats for that long after the first
submit, even once the job is done; `debounce` runs one job, with the last
submit's arguments, that long after the last submit. Needs shared state (a
`StateStore` in the broker or its result store); without it, the options are
a `ConfigurationError` naming ``results=``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import upnext
from upnext._statekeys import unique_key
from upnext.testing.semantics_base import (
    EARLY_SLACK,
    Timing,
    WorkerFactory,
    need,
    violated,
    wait_until,
)
from upnext.testing.semantics_unique_modes import (
    LIMIT,
    ThrottleDebounceSemantics,
    need_state,
)

__all__ = ["UniqueJobSemantics", "need_state"]


class UniqueJobSemantics(ThrottleDebounceSemantics):
    """Unique jobs as docs/scheduling.md#unique-jobs describes them."""

    @pytest.mark.asyncio
    async def test_a_queued_job_id_submitted_again_is_a_duplicate(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """Queued: the repeat is `duplicate`, enqueues nothing, and gets the first job's result."""
        worker = make_worker()
        need_state(worker)
        runs: list[int] = []

        @worker.task
        async def record(x: int) -> int:
            runs.append(x)
            return x

        job = record.options(job_id=f"{upnext_queue}-job")
        first, again = await job.submit(x=1), await job.submit(x=2)
        async with worker:
            values = [await f.value(timing.tolerance(LIMIT)) for f in (first, again)]
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert (first.duplicate, again.duplicate) == (False, True), violated(
            "only the caller who created a unique job gets duplicate=False"
        )
        assert again.job_id == first.job_id
        assert (values, runs) == ([1, 1], [1]), violated("a queued unique job runs once, as first")

    @pytest.mark.asyncio
    async def test_a_scheduled_job_id_submitted_again_is_a_duplicate(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """Scheduled: the repeat (due now) is `duplicate`; the job keeps its due time."""
        worker = make_worker()
        need_state(worker)
        ran_at: list[float] = []

        @worker.task
        async def remind() -> str:
            ran_at.append(time.monotonic())
            return "sent"

        delay, job_id = timing.delay(0.6), f"{upnext_queue}-job"
        async with worker:
            submitted = time.monotonic()
            first = await remind.options(job_id=job_id, delay=delay).submit()
            again = await remind.options(job_id=job_id).submit()
            assert await again.value(timing.tolerance(LIMIT)) == "sent"
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert (first.duplicate, again.duplicate) == (False, True), violated("scheduled")
        assert len(ran_at) == 1, violated("a scheduled unique job runs once")
        assert ran_at[0] - submitted >= delay - EARLY_SLACK, violated("it keeps its due time")

    @pytest.mark.asyncio
    async def test_a_running_job_id_submitted_again_is_a_duplicate(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """Running: the repeat is `duplicate` and starts no second run, then or later."""
        worker = make_worker(concurrency=4)
        need_state(worker)
        started: list[int] = []
        go_on = asyncio.Event()

        @worker.task
        async def hold(x: int) -> int:
            started.append(x)
            await go_on.wait()
            return x

        job = hold.options(job_id=f"{upnext_queue}-job")
        async with worker:
            first = await job.submit(x=1)
            try:
                await wait_until(lambda: started == [1], within=timing.tolerance(LIMIT), what="run")
                again = await job.submit(x=2)
            finally:
                go_on.set()
            value = await again.value(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert (first.duplicate, again.duplicate) == (False, True), violated("running")
        assert (value, started) == (1, [1]), violated("a running unique job runs once")

    @pytest.mark.asyncio
    async def test_a_finished_job_id_is_held_while_its_result_is_kept(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """Done: a repeat is `duplicate` until the result expires; then the id runs again."""
        worker = make_worker()
        need_state(worker)
        runs: list[int] = []
        kept = timing.delay(1.0)

        @worker.task(result_ttl=kept)
        async def record(x: int) -> int:
            runs.append(x)
            return x

        job = record.options(job_id=f"{upnext_queue}-job")
        async with worker:
            assert await (await job.submit(x=1)).value(timing.tolerance(LIMIT)) == 1
            while_kept = await job.submit(x=2)
            kept_value = await while_kept.value(timing.tolerance(LIMIT))
            await asyncio.sleep(kept + timing.delay(0.3))
            # The worker cuts the claim right after the settle; on a loaded machine that
            # can land after the result's expiry (docs/scheduling.md#when-a-key-is-free-again).
            await _claim_cut(worker, upnext_queue, f"{upnext_queue}-job", timing)
            after = await job.submit(x=3)
            after_value = await after.value(timing.tolerance(LIMIT))
        assert (while_kept.duplicate, kept_value) == (True, 1), violated(
            "a finished unique job's id is held while its result is kept"
        )
        assert (after.duplicate, after_value) == (False, 3), violated(
            "a unique job's id is free again once its result expired"
        )
        assert runs == [1, 3]

    @pytest.mark.asyncio
    async def test_a_cancelled_job_id_is_held_while_its_cancelled_result_is_kept(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """Cancelled before it ran: repeats get the cancelled job, then the id is free."""
        worker = make_worker()
        need_state(worker)
        await need(worker, "cancel_queued")
        kept = timing.delay(1.0)

        @worker.task(result_ttl=kept)
        async def remind(n: int) -> int:
            return n

        job = remind.options(job_id=f"{upnext_queue}-job")
        async with worker:
            first = await job.options(delay=60.0).submit(n=1)
            assert await first.cancel()
            again = await job.submit(n=2)
            with pytest.raises(upnext.TaskExecutionError) as caught:
                await again.value(timing.tolerance(LIMIT))
            await asyncio.sleep(kept + timing.delay(0.3))
            after = await job.submit(n=3)
            after_value = await after.value(timing.tolerance(LIMIT))
        assert (again.duplicate, caught.value.status) == (True, "cancelled"), violated(
            "a cancelled unique job's id is held while its cancelled result is kept"
        )
        assert (after.duplicate, after_value) == (False, 3), violated(
            "a cancelled unique job's id is free once its result expired"
        )

    @pytest.mark.asyncio
    async def test_concurrent_submits_of_one_id_make_one_job(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """50 submits at once: one creator, one run, and every caller gets its result."""
        worker = make_worker()
        need_state(worker)
        runs: list[int] = []

        @worker.task
        async def record(x: int) -> int:
            runs.append(x)
            return x

        job = record.options(job_id=f"{upnext_queue}-job")
        async with worker:
            futures = await asyncio.gather(*(job.submit(x=n) for n in range(50)))
            values = [await f.value(timing.tolerance(LIMIT)) for f in futures]
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert sum(not f.duplicate for f in futures) == 1, violated("exactly one caller creates")
        assert len(runs) == 1, violated("concurrent submits of one id run one job")
        assert values == [runs[0]] * 50, violated("every caller gets that job's result")

    @pytest.mark.asyncio
    async def test_submit_and_wait_idempotent_use_the_key_per_task(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`wait_idempotent` twice runs once; the key is namespaced by the task."""
        worker = make_worker()
        need_state(worker)
        runs: list[str] = []

        @worker.task(name="charge")
        async def charge(amount: int) -> str:
            runs.append(f"charge {amount}")
            return f"charged {amount}"

        @worker.task(name="refund")
        async def refund(amount: int) -> str:
            runs.append(f"refund {amount}")
            return f"refunded {amount}"

        async with worker:
            first = await charge.wait_idempotent("order-7", amount=5, wait_timeout=LIMIT)
            second = await charge.wait_idempotent("order-7", amount=6, wait_timeout=LIMIT)
            other = await refund.submit_idempotent("order-7", amount=5)
            assert await other.value(timing.tolerance(LIMIT)) == "refunded 5"
        assert (first.value, second.value) == ("charged 5", "charged 5"), violated(
            "a repeated idempotency key gets the first job's result"
        )
        assert (first.job_id, other.job_id) == ("charge:order-7", "refund:order-7"), violated(
            "an idempotency key's job id is <task name>:<key>"
        )
        assert runs == ["charge 5", "refund 5"], violated("one run per task and key")

    @pytest.mark.asyncio
    async def test_unique_key_derives_the_job_id_from_the_arguments(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`unique_key="{user_id}"`: same user, one job; another user, another job."""
        worker = make_worker()
        need_state(worker)
        runs: list[tuple[int, str]] = []

        @worker.task(name="sync_user", unique_key="{user_id}")
        async def sync_user(user_id: int, reason: str = "signup") -> str:
            runs.append((user_id, reason))
            return reason

        first = await sync_user.submit(user_id=1)
        again = await sync_user.submit(1, reason="edit")
        other = await sync_user.submit(user_id=2, reason="edit")
        async with worker:
            values = [await f.value(timing.tolerance(LIMIT)) for f in (first, again, other)]
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert (first.job_id, other.job_id) == ("sync_user:1", "sync_user:2"), violated(
            "unique_key makes the job id <task name>:<formatted key>"
        )
        assert [f.duplicate for f in (first, again, other)] == [False, True, False]
        assert values == ["signup", "signup", "edit"]
        assert sorted(runs) == [(1, "signup"), (2, "edit")], violated("one run per derived key")

    def test_unique_key_naming_no_parameter_is_refused_at_decoration(
        self, make_worker: WorkerFactory
    ) -> None:
        """A placeholder that names no parameter: a one-line ConfigurationError."""
        worker = make_worker()
        need_state(worker)

        async def sync_user(user_id: int) -> None: ...

        with pytest.raises(upnext.ConfigurationError) as caught:
            worker.task(unique_key="{user}")(sync_user)
        assert "'user'" in str(caught.value)
        assert "\n" not in str(caught.value)

    def test_unique_options_without_shared_state_name_results(
        self, make_worker: WorkerFactory
    ) -> None:
        """No state store: job_id, unique_for and debounce are one-line errors naming results=."""
        worker = make_worker()
        if worker.factories.has_state:
            pytest.skip("this broker keeps shared state")

        @worker.task
        async def noop() -> None: ...

        for options in ({"job_id": "a"}, {"job_id": "a", "unique_for": 1.0}):
            with pytest.raises(upnext.ConfigurationError, match="results="):
                noop.options(**options)


async def _claim_cut(worker: upnext.Worker, queue: str, job_id: str, timing: Timing) -> None:
    """Wait (within the suite's tolerance) until the worker has freed the job's claim."""
    state = (await worker.client()).state
    assert state is not None
    key = unique_key(queue, job_id)
    deadline = time.monotonic() + timing.tolerance(LIMIT)
    while (await state.state_get([key]))[0] is not None:
        assert time.monotonic() < deadline, violated(
            "a settled unique job's claim must be freed once its result expired"
        )
        await asyncio.sleep(0.02)
