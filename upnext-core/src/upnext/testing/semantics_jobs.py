"""`JobListingSemantics`: the jobs listing (`upnext.jobs`) agrees with what a worker did.

Covers "Jobs" of docs/operations.md: after one worker tick, jobs that
succeeded are listed ``complete``, jobs that failed to the dead-letter queue
``failed`` (with their entry) and ``dead``, delayed ones ``scheduled`` (on a
broker that can show waiting jobs; elsewhere asking is a one-line error);
the task filter matches a substring; following cursors visits each job once;
a running job is ``active`` with its worker's id. Without a state store
(RabbitMQ with no ``results=``) those tests skip, and one checks that the
history and the registry answer with the one-line error naming ``results=``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from upnext import ConfigurationError, Worker
from upnext.broker.optional import JobBrowser
from upnext.jobs import JobPage, JobSummary, find_job, list_jobs
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    broker_of,
    need_dlq,
    violated,
)

__all__ = ["JobListingSemantics"]

LIMIT = 5.0


async def _every(worker: Worker, **filters: Any) -> list[JobSummary]:
    """Every job of a listing, following its cursors (each page at most 3 jobs)."""
    items: list[JobSummary] = []
    cursor: str | None = None
    while True:
        page: JobPage = await list_jobs(worker, limit=3, cursor=cursor, **filters)
        items += page.items
        if (cursor := page.next_cursor) is None:
            return items


async def _listed(
    worker: Worker,
    timing: Timing,
    done: Callable[[list[JobSummary]], bool],
    what: str,
    **filters: Any,
) -> list[JobSummary]:
    """The listing once `done` holds for it (polled: a worker tick writes it)."""
    deadline = time.monotonic() + timing.tolerance(LIMIT)
    while True:
        items = await _every(worker, **filters)
        if done(items):
            return items
        if time.monotonic() > deadline:
            pytest.fail(violated(f"{what}; listed: {[(j.job_id, j.status) for j in items]}"))
        await asyncio.sleep(0.1)


async def _need_state(worker: Worker) -> None:
    """Skip unless the worker's broker or result store keeps shared state."""
    if (await worker.client()).state is None:
        pytest.skip("needs a state store (the broker's, or results=...) for history and registry")


class JobListingSemantics(SemanticsBase):
    """The jobs listing through a real worker: statuses, counts, filter, paging, active."""

    @pytest.mark.asyncio
    async def test_without_a_state_store_the_listing_says_what_it_needs(
        self, make_worker: WorkerFactory
    ) -> None:
        """No state store: complete, active and unfiltered listings are a one-line error."""
        worker = make_worker()
        if (await worker.client()).state is not None:
            pytest.skip("the broker keeps state: the listing works (tested below)")
        for status in (None, "active", "complete"):
            with pytest.raises(ConfigurationError, match="results=") as caught:
                await list_jobs(worker, status=status)
            assert "\n" not in str(caught.value), violated("a one-line error")

    @pytest.mark.asyncio
    async def test_finished_failed_dead_and_scheduled_jobs_are_listed(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """After a tick: 4 complete, 2 failed with their DLQ entries, 2 dead, 2 scheduled."""
        worker = make_worker()
        await _need_state(worker)
        await need_dlq(worker)

        @worker.task
        async def fine(n: int) -> int:
            return n

        @worker.task
        async def broken(n: int) -> None:
            raise ValueError(f"broken {n}")

        queue = worker.name
        async with worker:
            ok = [await fine.submit(n=n) for n in range(4)]
            bad = [await broken.submit(n=n) for n in range(2)]
            later = [await fine.options(delay=600).submit(n=n) for n in range(2)]
            for future in ok:
                await future.result(timing.tolerance(LIMIT))
            complete = await _listed(
                worker, timing, lambda js: len(js) == 4, "4 jobs listed complete",
                status="complete", queue=queue,
            )  # fmt: skip
            failed = await _listed(
                worker, timing, lambda js: len(js) == 2, "2 jobs listed failed",
                status="failed", queue=queue,
            )  # fmt: skip
            dead = await _every(worker, status="dead", queue=queue)
            if isinstance(await broker_of(worker), JobBrowser):
                scheduled = await _every(worker, status="scheduled", queue=queue)
                assert {j.job_id for j in scheduled} == {f.job_id for f in later}, violated(
                    "delayed jobs are listed scheduled on a broker with a JobBrowser"
                )
            else:
                with pytest.raises(ConfigurationError, match="counts only"):
                    await list_jobs(worker, status="scheduled", queue=queue)
        assert {j.job_id for j in complete} == {f.job_id for f in ok}, violated(
            "succeeded jobs are listed complete after a tick"
        )
        assert {j.job_id for j in failed} == {f.job_id for f in bad}, violated(
            "jobs that failed to the DLQ are listed failed"
        )
        assert {j.job_id for j in dead} == {f.job_id for f in bad}, violated(
            "dead-lettered jobs are listed dead"
        )
        entries = {j.job_id: j.dlq_entry_id for j in dead}
        assert all(j.dlq_entry_id == entries[j.job_id] for j in failed), violated(
            "a failed job names its dead-letter entry"
        )
        assert all(j.error and j.error.startswith("ValueError: broken") for j in failed)

    @pytest.mark.asyncio
    async def test_task_filter_matches_a_substring(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """`task` keeps jobs whose dotted function name contains it, case-sensitively."""
        worker = make_worker()
        await _need_state(worker)

        @worker.task
        async def alpha_report() -> None:
            pass

        @worker.task
        async def beta_report() -> None:
            pass

        async with worker:
            alphas = [await alpha_report.submit() for _ in range(2)]
            await beta_report.wait(wait_timeout=timing.tolerance(LIMIT))
            for future in alphas:
                await future.result(timing.tolerance(LIMIT))
            found = await _listed(
                worker, timing, lambda js: len(js) >= 2, "the alpha jobs listed",
                task="lpha_rep", queue=worker.name,
            )  # fmt: skip
            assert await _every(worker, task="LPHA_REP", queue=worker.name) == [], violated(
                "the task filter is case-sensitive"
            )
        assert {j.job_id for j in found} == {f.job_id for f in alphas}, violated(
            "the task filter matches a substring of the function name"
        )

    @pytest.mark.asyncio
    async def test_paging_visits_each_job_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Following next_cursor over 7 finished jobs, 3 a page, lists each exactly once."""
        worker = make_worker()
        await _need_state(worker)

        @worker.task
        async def counted(n: int) -> int:
            return n

        async with worker:
            futures = [await counted.submit(n=n) for n in range(7)]
            for future in futures:
                await future.result(timing.tolerance(LIMIT))
            items = await _listed(
                worker, timing, lambda js: len(js) >= 7, "7 jobs listed", queue=worker.name
            )
        ids = [j.job_id for j in items]
        assert len(ids) == len(set(ids)) == 7, violated("paging lists each job exactly once")
        assert set(ids) == {f.job_id for f in futures}

    @pytest.mark.asyncio
    async def test_a_running_job_is_active_with_its_worker(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A job whose body runs is listed active, with the id of the worker running it."""
        worker = make_worker()
        await _need_state(worker)
        release = asyncio.Event()

        @worker.task
        async def held() -> None:
            await release.wait()

        async with worker:
            assert worker.consumer is not None
            worker_id = worker.consumer.worker_id
            future = await held.submit()
            active = await _listed(
                worker, timing, lambda js: len(js) == 1, "the running job listed active",
                status="active", queue=worker.name,
            )  # fmt: skip
            info = await find_job(worker, future.job_id)
            release.set()
            await future.result(timing.tolerance(LIMIT))
        assert active[0].job_id == future.job_id, violated("the running job is listed active")
        assert active[0].worker_id == worker_id == info.worker_id, violated(
            "an active job names the worker running it"
        )
        assert info.status == "active", violated("find_job says a running job is active")

    @pytest.mark.asyncio
    async def test_a_failed_job_names_its_dead_letter_entry_without_the_history(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """find_job of a dead-lettered job names its entry from an indexed DLQ by job id."""
        worker = make_worker(job_history=False)
        await need_dlq(worker)
        broker = await broker_of(worker)
        if broker.capabilities.dlq_access != "indexed":
            pytest.skip("a scan-type DLQ is not read through for one job (docs/operations.md)")

        @worker.task(retries=0)
        async def broken() -> None:
            raise ValueError("broken")

        # A queue listed before the job's: a store keyed by job id alone answers there too.
        first = make_worker("0" + worker.name, job_history=False)

        @first.task
        async def fine() -> None:
            return None

        async with first:
            await (await fine.submit()).result(timing.tolerance(LIMIT))
        async with worker:
            future = await broken.submit()
            with pytest.raises(Exception):  # noqa: B017, PT011  # the job's failure, any type
                await future.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        [entry] = (await worker.dlq.list(job_id=future.job_id)).items
        info = await find_job(worker, future.job_id)
        assert (info.status, info.dlq_entry_id, info.queue) == ("failed", entry.id, worker.name), (
            violated("a dead-lettered job names its dead-letter entry and queue (by its job id)")
        )
