"""`ThrottleDebounceSemantics`: `unique_for` and `debounce`, through a real worker.

Part of `UniqueJobSemantics` (docs/scheduling.md#throttle-unique_for and
#debounce-debounce): `unique_for` drops repeats of a key for that long after
the first submit, even once its job is done; `debounce` runs one job, with
the last submit's arguments, that long after the last submit, however many
submits (concurrent ones too) made the burst. Also the helpers the unique-job
classes share: `need_state` and `SettleLog`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import upnext
from upnext.middleware import Job, Middleware, Settlement
from upnext.testing.semantics_base import (
    EARLY_SLACK,
    SemanticsBase,
    Timing,
    WorkerFactory,
    capabilities_of,
    quantized_upper,
    violated,
)

__all__ = ["LIMIT", "SettleLog", "ThrottleDebounceSemantics", "need_state"]

LIMIT = 5.0


class SettleLog(Middleware):
    """Every settlement's status, in the order written."""

    settles_inline = True

    def __init__(self) -> None:
        self.statuses: list[str] = []

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        """Note the status."""
        self.statuses.append(settlement.status)


def need_state(worker: upnext.Worker) -> None:
    """Skip unless the worker's broker or result store keeps shared state."""
    if not worker.factories.has_state:
        pytest.skip("needs shared state (a StateStore): pass results='redis://...'")


class ThrottleDebounceSemantics(SemanticsBase):
    """Throttled and debounced keys as docs/scheduling.md describes them."""

    @pytest.mark.asyncio
    async def test_throttle_drops_repeats_for_unique_for_after_the_first(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """`unique_for`: repeats are dropped while the window lasts, even after the job ended."""
        worker = make_worker()
        need_state(worker)
        runs: list[int] = []
        window = timing.delay(1.0)

        @worker.task
        async def ping(n: int) -> int:
            runs.append(n)
            return n

        throttled = ping.options(job_id=f"{upnext_queue}-ping", unique_for=window)
        async with worker:
            began = time.monotonic()  # the window opens between here and `opened`
            first = await throttled.submit(n=1)
            opened = time.monotonic()
            assert await first.value(timing.tolerance(LIMIT)) == 1
            dropped = await throttled.submit(n=2)
            in_window = time.monotonic() - began < window
            await asyncio.sleep(max(0.0, window - (time.monotonic() - opened)) + timing.delay(0.2))
            later = await throttled.submit(n=3)
            assert await later.value(timing.tolerance(LIMIT)) == 3
        assert in_window, "the machine is too slow for this window: raise UPNEXT_TIMING_SCALE"
        assert (dropped.duplicate, dropped.job_id) == (True, first.job_id), violated(
            "a throttled key's repeat after its job ended, within unique_for, is dropped"
        )
        assert (later.duplicate, later.job_id != first.job_id) == (False, True), violated(
            "after unique_for a throttled key makes a new job"
        )
        assert runs == [1, 3]

    @pytest.mark.asyncio
    async def test_debounce_runs_once_with_the_last_arguments_after_the_last_submit(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """`debounce`: three submits, one run with the last arguments, `debounce` after it."""
        worker = make_worker()
        need_state(worker)
        runs: list[tuple[int, float]] = []
        quiet, gap = timing.delay(0.6), timing.delay(0.15)

        @worker.task
        async def save(draft: int) -> int:
            runs.append((draft, time.monotonic()))
            return draft

        debounced = save.options(job_id=f"{upnext_queue}-doc", debounce=quiet)
        async with worker:
            quantum = (await capabilities_of(worker)).delay_quantum
            futures = []
            for draft in (1, 2, 3):
                futures.append(await debounced.submit(draft=draft))
                last = time.monotonic()
                await asyncio.sleep(gap)
            values = [await f.value(timing.tolerance(LIMIT)) for f in futures]
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert [draft for draft, _ in runs] == [3], violated("a debounced burst runs once, last")
        assert values == [3, 3, 3], violated("every caller of the burst gets the run's result")
        assert [f.duplicate for f in futures] == [False, True, True]
        assert len({f.job_id for f in futures}) == 1
        waited = runs[0][1] - last
        assert waited >= quiet - EARLY_SLACK, violated(f"ran {waited:.3f} s after the last submit")
        assert waited <= quantized_upper(quiet, quantum) + timing.tolerance(1.0), violated(
            f"a debounced job runs about `debounce` after the last submit, not {waited:.3f} s"
        )

    @pytest.mark.asyncio
    async def test_concurrent_debounced_submits_make_one_burst(
        self, make_worker: WorkerFactory, upnext_queue: str, timing: Timing
    ) -> None:
        """30 debounced submits at once: one creator, one run, one result for all."""
        settles = SettleLog()
        worker = make_worker(middleware=[settles])
        need_state(worker)
        runs: list[int] = []

        @worker.task
        async def save(draft: int) -> int:
            runs.append(draft)
            return draft

        debounced = save.options(job_id=f"{upnext_queue}-doc", debounce=timing.delay(0.3))
        async with worker:
            futures = await asyncio.gather(*(debounced.submit(draft=n) for n in range(30)))
            values = [await f.value(timing.tolerance(LIMIT)) for f in futures]
            await worker.join(timeout=timing.tolerance(LIMIT))
        statuses = [s for s in settles.statuses if s != "scheduled"]  # its own delays
        assert sum(not f.duplicate for f in futures) == 1, violated("one submit makes the burst")
        assert len(runs) == 1, violated("concurrent debounced submits run one job")
        assert values == [runs[0]] * 30, violated("every caller gets the burst's result")
        assert statuses == ["complete"], violated(
            f"one job is enqueued for a burst, none skipped: settled {statuses}"
        )
