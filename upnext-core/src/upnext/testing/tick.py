"""`WorkerTickSemantics`: the worker tick over a real `StateStore`.

The tick is driven directly, with fakes of the consumer's two providers (the
jobs it runs, and what it does with a cancel request), at 0.1 s a tick, so a
"within ~1.5 s" at one tick a second is "within a few ticks" here. Tests take
the `state` fixture (the broker itself unless overridden). Worker ids start
with the test's queue name, so tests on a shared store never meet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from upnext._statekeys import REGISTRY_TICKS, cancel_key
from upnext._tick import HeldSlots, WorkerTick
from upnext.broker.state import SlotClaim, StateStore, StateWrite
from upnext.testing._support import Timing, violated
from upnext.workers import RunningJob, WorkerInfo, read_registry

__all__ = ["FakeConsumer", "WorkerTickSemantics"]

INTERVAL = 0.1  # seconds a tick, before the timing scale


class FakeConsumer:
    """The consumer's side of the tick: a list of running jobs, and the cancels received."""

    def __init__(self) -> None:
        self.jobs: list[RunningJob] = []
        self.cancelled: list[str] = []

    def running(self) -> list[RunningJob]:
        """The jobs running now."""
        return list(self.jobs)

    def on_cancel(self, job_id: str) -> None:
        """Record a cancel request."""
        self.cancelled.append(job_id)

    def run(self, job_id: str, attempt: int = 1, progress: float | None = None) -> RunningJob:
        """Start running a job (as far as the tick can see)."""
        job = RunningJob(
            job_id=job_id,
            function="tests.work",
            attempt=attempt,
            started_at=time.time(),
            progress=progress,
        )
        self.jobs.append(job)
        return job


async def _within(seconds: float, check: Callable[[], Awaitable[bool]]) -> bool:
    """Whether `check()` holds at some point within `seconds` (polled every 20 ms)."""
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


async def _entry(state: StateStore, worker_id: str) -> WorkerInfo | None:
    return next((w for w in await read_registry(state) if w.worker_id == worker_id), None)


class WorkerTickSemantics:
    """The tick's registry, cancel markers and slot refresh, on this store."""

    @asynccontextmanager
    async def ticking(
        self, state: StateStore, worker_id: str, timing: Timing, slots: HeldSlots | None = None
    ) -> AsyncIterator[tuple[WorkerTick, FakeConsumer]]:
        """A started tick over `state` for a fake consumer; stopped (deregistered) after."""
        consumer = FakeConsumer()
        tick = WorkerTick(
            state,
            worker_id=worker_id,
            name="tick-test",
            queues=["q1", "q2"],
            concurrency=4,
            running=consumer.running,
            on_cancel=consumer.on_cancel,
            slots=slots,
            interval=timing.delay(INTERVAL),
        )
        tick.start()
        try:
            yield tick, consumer
        finally:
            await tick.stop()

    @pytest.mark.asyncio
    async def test_registry_entry_appears_and_carries_running_jobs(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A ticking worker is listed within a few ticks with its identity and running jobs."""
        worker_id = f"{upnext_queue}:w"
        async with self.ticking(state, worker_id, timing) as (_, consumer):
            job = consumer.run("job-1", attempt=2, progress=0.5)

            async def listed_with_job() -> bool:
                info = await _entry(state, worker_id)
                return info is not None and info.running == [job]

            assert await _within(timing.tolerance(1.5), listed_with_job), violated(
                "a ticking worker must be listed, with its running jobs, within ~1.5 s"
            )
            info = await _entry(state, worker_id)
            assert info is not None
            assert (info.name, info.queues, info.concurrency, info.running_count) == (
                "tick-test",
                ["q1", "q2"],
                4,
                1,
            ), violated("the registry entry must carry the worker's name, queues, concurrency")
            consumer.jobs.clear()

            async def listed_idle() -> bool:
                info = await _entry(state, worker_id)
                return info is not None and info.running == []

            assert await _within(timing.tolerance(1.5), listed_idle), violated(
                "the registry entry must follow the jobs the worker runs"
            )

    @pytest.mark.asyncio
    async def test_registry_entry_leaves_at_stop_and_after_death(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A clean stop removes the entry at once; a dead worker's lapses after its TTL."""
        for n, clean in enumerate((True, False)):
            worker_id = f"{upnext_queue}:{n}"
            async with self.ticking(state, worker_id, timing) as (tick, _):

                async def listed(worker_id: str = worker_id) -> bool:
                    return await _entry(state, worker_id) is not None

                assert await _within(timing.tolerance(1.5), listed)
                await tick.stop(deregister=clean)  # deregister=False: the process died
                if clean:
                    assert not await listed(), violated("a clean stop must remove the entry")
                    continue
                assert await listed(), violated("a dead worker's entry stays until its TTL")
                ttl = REGISTRY_TICKS * tick.interval

                async def gone(worker_id: str = worker_id) -> bool:
                    return await _entry(state, worker_id) is None

                assert await _within(ttl + timing.tolerance(0.5), gone), violated(
                    "a dead worker's entry must lapse a few ticks after its last beat"
                )

    @pytest.mark.asyncio
    async def test_cancel_marker_reaches_only_a_running_job(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A marked running job gets one on_cancel within a few ticks; a job not run here none."""
        here, elsewhere = f"{upnext_queue}-here", f"{upnext_queue}-elsewhere"
        async with self.ticking(state, f"{upnext_queue}:w", timing) as (tick, consumer):
            consumer.run(here)
            consumer.run(f"{upnext_queue}-unmarked")
            marks = [StateWrite(cancel_key(j), b"user", 60.0) for j in (here, elsewhere)]
            await state.state_put(marks)

            async def cancelled() -> bool:
                return bool(consumer.cancelled)

            assert await _within(timing.tolerance(1.5), cancelled), violated(
                "a cancel marker of a running job must reach on_cancel within ~1.5 s"
            )
            await asyncio.sleep(3 * tick.interval)
            assert consumer.cancelled == [here], violated(
                "on_cancel must be called once, and only for jobs this worker runs"
            )
        await state.state_put([StateWrite(cancel_key(j), None) for j in (here, elsewhere)])

    @pytest.mark.asyncio
    async def test_held_slots_outlive_their_ttl_while_ticking(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A held slot stays taken past its TTL while the tick runs, and lapses after it stops."""
        key, ttl = f"{upnext_queue}:slot", timing.delay(3 * INTERVAL)
        held = HeldSlots()
        assert (await state.slots_acquire(key, "mine", limit=1, ttl=ttl)).acquired
        held.hold(SlotClaim(key, "mine", 1, ttl))
        async with self.ticking(state, f"{upnext_queue}:w", timing, held):
            await asyncio.sleep(3 * ttl)
            other = await state.slots_acquire(key, "other", limit=1, ttl=ttl)
            assert not other.acquired, violated("a slot the tick refreshes must stay held")
        await asyncio.sleep(ttl + timing.tolerance(0.1))
        freed = await state.slots_acquire(key, "other", limit=1, ttl=ttl)
        assert freed.acquired, violated("a slot must lapse once no tick refreshes it")
        await state.slots_release(key, ["other"])
