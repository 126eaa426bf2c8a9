"""`CronSemantics`: `@worker.cron` through real workers on your broker.

Covers docs/scheduling.md#cron: a cron's runs know their tick
(`Context.scheduled_for`); with two workers each tick runs once and none is
skipped; a restarted worker resumes from the stored cursor; each
`MissedRunPolicy` decides what runs of the ticks missed while no worker ran;
a tick is skipped while the previous run still runs unless ``allow_overlap``;
a disabled cron fires nothing until enabled; a tick claimed by a worker that
died before enqueuing it still runs. Without a state store (RabbitMQ with no
``results=``) those tests skip, and one checks the one-line error naming
``results=``. Ticks are short intervals (``every=``, scaled by `timing`);
overlap is allowed but where it is the subject, so a tick whose previous run
is still queued is not skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field
from datetime import datetime

import pytest

import upnext
from upnext._cronstate import CronCursor
from upnext._statekeys import cron_key
from upnext.broker.state import StateWrite
from upnext.crons import disable_cron, enable_cron, list_crons
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    violated,
    wait_until,
)

__all__ = ["CronSemantics"]

STEP = 0.2  # seconds between ticks, before scaling
# How long a loaded machine may take to run a tick that is due (several state
# round trips and an enqueue: slow on a Redis Cluster under coverage). Not what
# these tests judge: which ticks run, and how often.
SLOW_START = 3.0


@dataclass
class Runs:
    """What a cron's runs saw: their ticks, job ids and how many ran at once."""

    ticks: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    running: int = 0
    most: int = 0


def _cron(
    worker: upnext.Worker, runs: Runs, every: float, hold: float = 0.0, **options: object
) -> None:
    """Declare `worker`'s cron (named after it) recording into `runs`.

    Overlap is allowed unless `options` say otherwise: a run slow to start (a
    batch of catch-up ticks still queued) must not make these tests skip a tick.
    """
    options.setdefault("allow_overlap", True)

    @worker.cron(every=every, name=f"{worker.name}.beat", **options)  # type: ignore[arg-type]
    async def beat() -> None:
        context = upnext.get_current_context()
        assert context.scheduled_for is not None
        runs.ticks.append(context.scheduled_for.timestamp())
        runs.ids.append(context.job_id)
        runs.running += 1
        runs.most = max(runs.most, runs.running)
        try:
            await asyncio.sleep(hold)
        finally:
            runs.running -= 1


def _need_state(worker: upnext.Worker) -> None:
    if not worker.factories.has_state:
        pytest.skip("cron needs a state store (this broker keeps none without results=)")


def _grid(ticks: list[float], every: float) -> list[int]:
    """Each tick as its whole number of intervals (ticks are multiples of `every`)."""
    return sorted(round(tick / every) for tick in ticks)


async def _until_mid_tick(every: float) -> float:
    """Sleep until half-way between two ticks; that moment."""
    now = time.time()
    mid = (math.floor(now / every) + 1.5) * every
    await asyncio.sleep(mid - now)
    return mid


async def _last_tick(worker: upnext.Worker, every: float) -> int:
    """The last tick the stored cursor of `worker`'s cron says was handled, in intervals."""
    [info] = [c for c in await list_crons(worker) if c.name == f"{worker.name}.beat"]
    assert info.last_tick is not None
    return round(info.last_tick.timestamp() / every)


class CronSemantics(SemanticsBase):
    """Cron as docs/scheduling.md describes it."""

    @pytest.mark.asyncio
    async def test_without_a_state_store_declaring_a_cron_names_results(
        self, make_worker: WorkerFactory
    ) -> None:
        """No shared state: ``@worker.cron`` is a one-line error naming ``results=``."""
        worker = make_worker()
        if worker.factories.has_state:
            pytest.skip("this broker keeps state: crons work")
        with pytest.raises(upnext.ConfigurationError, match="results=") as caught:
            worker.cron(every=1.0)
        assert "\n" not in str(caught.value)

    @pytest.mark.asyncio
    async def test_a_seconds_cron_runs_each_second_knowing_its_tick(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """``"* * * * * *"``: a run per second, `scheduled_for` an aware whole second."""
        worker = make_worker()
        _need_state(worker)
        seen: list[datetime] = []

        @worker.cron("* * * * * *", name=f"{worker.name}.second")
        async def second() -> None:
            scheduled = upnext.get_current_context().scheduled_for
            assert scheduled is not None
            seen.append(scheduled)

        async with worker:
            await asyncio.sleep(timing.tolerance(2.6))
        assert len(seen) >= 2, violated("an every-second cron runs every second")
        assert all(s.tzinfo is not None and s.microsecond == 0 for s in seen), violated(
            f"scheduled_for is the tick, an aware whole second: {seen}"
        )
        assert {(b - a).total_seconds() for a, b in itertools.pairwise(seen)} == {1.0}, violated(
            f"a run per second, none skipped or repeated: {seen}"
        )

    @pytest.mark.asyncio
    async def test_two_workers_run_each_tick_once_and_skip_none(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Two workers, one cron: every tick from the first to the last ran exactly once."""
        every, runs = timing.delay(STEP), Runs()
        first, second = make_worker(), make_worker()
        _need_state(first)
        for worker in (first, second):
            _cron(worker, runs, every)
        async with first, second:
            await asyncio.sleep(every * 8)
        grid = _grid(runs.ticks, every)
        assert len(grid) >= 5, violated(f"the cron ran every tick, got {len(grid)} runs")
        assert grid == list(range(grid[0], grid[-1] + 1)), violated(
            f"each tick runs once, none twice or skipped, with two workers: {grid}"
        )
        assert len(set(runs.ids)) == len(runs.ids), violated("a tick is one job")

    @pytest.mark.asyncio
    async def test_a_restarted_worker_resumes_from_the_stored_cursor(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """CATCH_UP across a restart: the ticks of the stop run after it, each once."""
        every, runs = timing.delay(STEP), Runs()
        policy = upnext.MissedRunPolicy.CATCH_UP
        before, after = make_worker(), make_worker()
        _need_state(before)
        _cron(before, runs, every, missed_run_policy=policy)
        _cron(after, runs, every, missed_run_policy=policy)
        async with before:
            await asyncio.sleep(every * 3)
            await wait_until(
                lambda: bool(runs.ticks),
                within=timing.tolerance(SLOW_START),
                what="the cron ran before the restart",
            )
        stopped = len(runs.ticks)
        await asyncio.sleep(every * 4)
        async with after:
            await asyncio.sleep(every * 3)
            await wait_until(
                lambda: len(runs.ticks) >= stopped + 6,
                within=timing.tolerance(SLOW_START),
                what="the restarted worker caught up the 4 ticks missed and ran on",
            )
        grid = _grid(runs.ticks, every)
        assert stopped >= 1, violated("the cron ran before the restart")
        assert len(grid) >= stopped + 6, violated(f"the restarted worker caught up: {grid}")
        assert grid == list(range(grid[0], grid[-1] + 1)), violated(
            f"the missed ticks ran once each, from the stored cursor on: {grid}"
        )

    @pytest.mark.asyncio
    @pytest.mark.parametrize(
        ("policy", "catch_up", "expected"),
        [
            (upnext.MissedRunPolicy.LATEST_ONLY, None, "latest"),
            (upnext.MissedRunPolicy.CATCH_UP, None, "all"),
            (upnext.MissedRunPolicy.CATCH_UP, 3.0, "recent"),
            (upnext.MissedRunPolicy.SKIP, None, "none"),
        ],
    )
    async def test_the_missed_run_policy_decides_the_ticks_missed_while_stopped(
        self,
        make_worker: WorkerFactory,
        timing: Timing,
        policy: upnext.MissedRunPolicy,
        catch_up: float | None,
        expected: str,
    ) -> None:
        """Stopped for ~6 ticks, restarted between two: the policy picks which missed ones run."""
        every, runs = timing.delay(STEP), Runs()
        bound = None if catch_up is None else catch_up * every
        before, after = make_worker(), make_worker()
        _need_state(before)
        _cron(before, runs, every, missed_run_policy=policy)
        _cron(after, runs, every, missed_run_policy=policy, max_catch_up_seconds=bound)
        async with before:
            await asyncio.sleep(every * 3)
        last = await _last_tick(before, every)
        await asyncio.sleep(every * 5)
        await after.client()  # connected: it starts at once
        restart = await _until_mid_tick(every)
        missed = range(last + 1, math.floor(restart / every) + 1)
        assert len(missed) >= 5, violated(f"ticks were missed while stopped: {list(missed)}")
        async with after:
            await asyncio.sleep(every * 3)
            await wait_until(
                lambda: max(_grid(runs.ticks, every), default=-1) > missed[-1],
                within=timing.tolerance(SLOW_START),
                what="ticks after the restart run",
            )
        ran = [n for n in _grid(runs.ticks, every) if n in missed]
        want = {
            "latest": [missed[-1]],
            "all": list(missed),
            "recent": [n for n in missed if n * every >= restart - (bound or 0.0)],
            "none": [],
        }[expected]
        assert ran == want, violated(
            f"{policy.name} (catch-up {catch_up}): missed ticks {list(missed)}, ran {ran}"
        )
        assert max(_grid(runs.ticks, every)) > missed[-1], violated("ticks after the restart run")

    @pytest.mark.asyncio
    @pytest.mark.parametrize("overlap", [False, True])
    async def test_a_tick_is_skipped_while_the_previous_run_still_runs(
        self, make_worker: WorkerFactory, timing: Timing, overlap: bool
    ) -> None:
        """Runs of 2.5 ticks: one at a time unless ``allow_overlap=True``."""
        every, runs = timing.delay(STEP), Runs()
        worker = make_worker()
        _need_state(worker)
        _cron(worker, runs, every, hold=every * 2.5, allow_overlap=overlap)
        async with worker:
            await asyncio.sleep(every * 10)
        assert len(runs.ticks) >= 2, violated(f"the cron ran, got {len(runs.ticks)} runs")
        if overlap:
            assert runs.most >= 2, violated("with allow_overlap=True runs overlap")
        else:
            assert runs.most == 1, violated("a tick is skipped while the previous run runs")
            assert len(runs.ticks) <= 5, violated(f"ticks were skipped: {len(runs.ticks)} ran")

    @pytest.mark.asyncio
    async def test_a_disabled_cron_fires_nothing_until_enabled(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """disable_cron stops it on every worker; enable_cron resumes from the next tick."""
        every, runs = timing.delay(STEP), Runs()
        worker = make_worker()
        _need_state(worker)
        _cron(worker, runs, every)
        name = f"{worker.name}.beat"
        async with worker:
            await asyncio.sleep(every * 3)
            await disable_cron(worker, name)
            await asyncio.sleep(every * 2)  # a tick claimed before the disable may still run
            quiet, count = time.time(), len(runs.ticks)
            await asyncio.sleep(every * 4)
            assert len(runs.ticks) == count, violated("a disabled cron fires nothing")
            [listed] = [c for c in await list_crons(worker) if c.name == name]
            assert not listed.enabled, violated("a disabled cron is listed disabled")
            assert listed.next_run is None, violated("a disabled cron has no next run")
            await enable_cron(worker, name)
            await asyncio.sleep(every * 4)
        later = runs.ticks[count:]
        assert later, violated("an enabled cron fires again")
        assert min(later) > quiet + every * 4, violated("ticks passed while disabled never run")

    @pytest.mark.asyncio
    async def test_a_tick_claimed_by_a_worker_that_died_still_runs_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A claim never confirmed (its worker died before enqueuing) is enqueued by another."""
        every, runs = timing.delay(1.0), Runs()
        worker = make_worker()
        _need_state(worker)
        _cron(worker, runs, every, missed_run_policy=upnext.MissedRunPolicy.SKIP)
        state = (await worker.client()).require_state("cron")
        lost = (math.floor(time.time() / every) - 2) * every
        cursor = CronCursor(
            schedule=f"every {every:g}s",
            every=every,
            last_tick=lost - every,
            pending=[lost],
            pending_since=time.time() - 60.0,
            claimed_by="a dead worker",
        )
        name = f"{worker.name}.beat"
        await state.state_put([StateWrite(cron_key(name), cursor.model_dump_json().encode())])
        async with worker:
            await asyncio.sleep(every * 1.5)
        assert runs.ticks.count(lost) == 1, violated(
            f"the dead worker's claimed tick {lost} ran once: {runs.ticks}"
        )
