"""`FlowLimitSemantics`: `rate_limit=` and `max_concurrency=` across workers, per key.

Covers docs/flow-control.md: a rate limit admits at most its count of starts
in any window of its length, whichever worker starts them; a job over a limit
waits (delayed, never dropped, never charged an attempt); `rate_key` and
`concurrency_key` give each key its own limit, and one key's backlog does not
hold another key's jobs back. Needs shared state (a `StateStore` in the broker
or its result store); without it the options are a `ConfigurationError`
naming ``results=``. Jobs record their own start times and how many of them
run at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

import upnext
from upnext.testing.semantics_base import SemanticsBase, Timing, WorkerFactory, violated
from upnext.testing.semantics_unique_modes import need_state

__all__ = ["FlowLimitSemantics"]

LIMIT = 10.0  # seconds a whole test's jobs may take, scaled by the suite's timing
EDGE = 0.05  # seconds two clocks (the store's, which judges windows, and ours) may disagree by


def _most_in_a_window(starts: list[float], window: float) -> int:
    """The most starts any window of `window` seconds (less `EDGE`) holds."""
    ordered = sorted(starts)
    most = 0
    for i, first in enumerate(ordered):
        most = max(most, sum(1 for t in ordered[i:] if t - first < window - EDGE))
    return most


class FlowLimitSemantics(SemanticsBase):
    """Rate and concurrency limits as docs/flow-control.md describes them."""

    @pytest.mark.asyncio
    async def test_a_rate_limit_admits_its_count_per_window_and_charges_no_attempt(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """``"3/s"``, 4 jobs, two workers: at most 3 starts in any second; every job runs once."""
        workers = [make_worker(concurrency=5), make_worker(concurrency=5)]
        need_state(workers[0])
        starts: list[float] = []
        attempts: list[int] = []

        async def call(i: int) -> int:
            starts.append(time.monotonic())
            attempts.append(upnext.get_current_context().attempt)
            return i

        name = f"{workers[0].name}.rated"
        tasks = [w.task(name=name, rate_limit="3/s")(call) for w in workers]
        futures = [await tasks[0].submit(i) for i in range(4)]
        async with workers[0], workers[1]:
            values = [await f.value(timing.tolerance(LIMIT)) for f in futures]
        assert values == list(range(4))
        assert attempts == [1] * 4, violated("a job a rate limit held back is charged no attempt")
        most = _most_in_a_window(starts, 1.0)
        assert most <= 3, violated(f"rate_limit='3/s' admits 3 starts a second, saw {most}")
        span = max(starts) - min(starts)
        assert span >= 1.0 - EDGE, violated(f"4 jobs at 3/s take 1 s or more to start, took {span}")

    @pytest.mark.asyncio
    async def test_a_rate_key_gives_each_key_its_own_window(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """``"1/s"`` per tenant (a function of the arguments): three tenants start together."""
        worker = make_worker(concurrency=5)
        need_state(worker)
        starts: dict[str, list[float]] = {}

        @worker.task(
            name=f"{worker.name}.per_tenant", rate_limit="1/s", rate_key=lambda tenant: tenant
        )
        async def call(tenant: str) -> None:
            starts.setdefault(tenant, []).append(time.monotonic())

        futures = [await call.submit(t) for t in ("a", "b", "c", "a")]
        async with worker:
            for future in futures:
                await future.value(timing.tolerance(LIMIT))
        firsts = [starts[t][0] for t in "abc"]
        assert max(firsts) - min(firsts) < 0.9, violated(
            "each rate_key has its own window: one key's start never waits for another's"
        )
        assert starts["a"][1] - starts["a"][0] >= 1.0 - EDGE, violated(
            "a key's second start waits for its window: '1/s' per key"
        )

    @pytest.mark.asyncio
    async def test_max_concurrency_holds_across_workers(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """``max_concurrency=2`` with two workers of 4: never more than 2 bodies at once."""
        workers = [make_worker(concurrency=4), make_worker(concurrency=4)]
        need_state(workers[0])
        running: list[int] = [0]
        most: list[int] = [0]
        attempts: list[int] = []

        async def call(i: int) -> int:
            running[0] += 1
            most[0] = max(most[0], running[0])
            attempts.append(upnext.get_current_context().attempt)
            try:
                await asyncio.sleep(0.15)
            finally:
                running[0] -= 1
            return i

        name = f"{workers[0].name}.capped"
        tasks = [w.task(name=name, max_concurrency=2)(call) for w in workers]
        futures = [await tasks[0].submit(i) for i in range(4)]
        async with workers[0], workers[1]:
            values = [await f.value(timing.tolerance(LIMIT)) for f in futures]
        assert values == list(range(4))
        assert most[0] <= 2, violated(f"max_concurrency=2 across workers, saw {most[0]} at once")
        assert most[0] == 2, violated("max_concurrency=2 lets two jobs run at once")
        assert attempts == [1] * 4, violated("a job a concurrency limit held back is charged none")

    @pytest.mark.asyncio
    async def test_a_concurrency_key_limits_each_key_and_a_backlog_does_not_block_others(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Per tenant (a template), 1 at a time: b's job starts while a's backlog waits."""
        worker = make_worker(concurrency=4)
        need_state(worker)
        running: Counter[str] = Counter()
        most: Counter[str] = Counter()
        started: dict[str, float] = {}
        beside: list[str] = []  # tenants whose job started while the other's ran

        @worker.task(
            name=f"{worker.name}.per_tenant", max_concurrency=1, concurrency_key="{tenant}"
        )
        async def call(tenant: str, i: int) -> None:
            running[tenant] += 1
            most[tenant] = max(most[tenant], running[tenant])
            started.setdefault(tenant, time.monotonic())
            if running["b" if tenant == "a" else "a"]:
                beside.append(tenant)
            try:
                await asyncio.sleep(0.2)
            finally:
                running[tenant] -= 1

        futures = [await call.submit("a", i) for i in range(3)]
        futures.append(await call.submit("b", 0))
        began = time.monotonic()
        async with worker:
            for future in futures:
                await future.value(timing.tolerance(LIMIT))
        assert dict(most) == {"a": 1, "b": 1}, violated(
            f"max_concurrency=1 per concurrency_key, saw at most {dict(most)} at once"
        )
        assert beside, violated(
            "each concurrency_key has its own limit: b's job runs beside a running a job"
        )
        waited = started["b"] - began
        assert waited < timing.tolerance(1.5), violated(
            f"another key's backlog must not hold a job back (b waited {waited:.2f} s)"
        )

    def test_limits_without_shared_state_name_results(self, make_worker: WorkerFactory) -> None:
        """No state store: rate_limit and max_concurrency are one-line errors naming results=."""
        worker = make_worker()
        if worker.factories.has_state:
            pytest.skip("this broker keeps shared state")

        async def noop() -> None: ...

        for options in ({"rate_limit": "1/s"}, {"max_concurrency": 1}):
            with pytest.raises(upnext.ConfigurationError, match="results=") as caught:
                worker.task(name=f"noop{len(options)}", **options)(noop)
            assert "\n" not in str(caught.value)
