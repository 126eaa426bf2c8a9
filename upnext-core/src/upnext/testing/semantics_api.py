"""`ApiSemantics`: the public calls (sync twins, options, submit_many, limits) on a real worker.

Covers docs/tasks.md ("Submitting", "Sync twins") and "Payload limit" of docs/semantics.md: `*_sync`
work from a plain thread, call back into the worker's loop inside a sync
task and refuse a thread running an event loop; a body over `max_payload`
fails at submit with nothing enqueued; direct calls run with no queue;
per-call options; `submit_many` in one round trip; configuration errors at
decoration; `get_current_context()` outside a job.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from typing import Any

import pytest

import upnext
from upnext import ConfigurationError, NoJobContext, PayloadTooLarge
from upnext.broker.protocol import Envelope
from upnext.testing.semantics_base import (
    EARLY_SLACK,
    SemanticsBase,
    Timing,
    WorkerFactory,
    broker_of,
    capabilities_of,
    quantized_upper,
    violated,
)

__all__ = ["ApiSemantics"]

LIMIT = 5.0


class ApiSemantics(SemanticsBase):
    """The public calls of docs/tasks.md and the payload limit, through a real worker."""

    @pytest.mark.asyncio
    async def test_sync_twins_work_from_a_plain_thread(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """submit_sync / wait_sync / result_sync block a plain thread until the job is done."""
        worker = make_worker()

        @worker.task
        async def double(x: int) -> int:
            return 2 * x

        def from_a_thread() -> list[Any]:
            waited = double.wait_sync(x=2, wait_timeout=timing.tolerance(LIMIT))
            future = double.submit_sync(x=3)
            return [waited.value, future.result_sync(timing.tolerance(LIMIT)).value]

        async with worker:
            values = await asyncio.wait_for(
                asyncio.to_thread(from_a_thread), timing.tolerance(LIMIT)
            )
        assert values == [4, 6], violated("the sync twins submit and wait from a plain thread")

    @pytest.mark.asyncio
    async def test_sync_twins_inside_a_sync_task_call_back_into_the_worker(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Inside a sync task, wait_sync runs on the worker's loop, keeping lineage and slots."""
        worker = make_worker(concurrency=1)

        @worker.task
        def child(x: int) -> list[Any]:
            ctx = upnext.get_current_context()
            return [x, ctx.parent_id]

        @worker.task
        def parent() -> list[Any]:
            result = child.wait_sync(x=5, wait_timeout=timing.tolerance(LIMIT))
            return [upnext.get_current_context().job_id, result.value]

        async with worker:
            result = await parent.wait(wait_timeout=timing.tolerance(LIMIT))
        assert result.value is not None
        parent_id, (x, childs_parent) = result.value
        assert x == 5, violated("a sync task can wait for another task with wait_sync")
        assert childs_parent == parent_id, violated("wait_sync in a sync task keeps lineage")

    @pytest.mark.asyncio
    async def test_sync_twins_refuse_a_running_event_loop(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """*_sync on a thread running an event loop raise ConfigurationError and enqueue nothing."""
        worker = make_worker()
        runs: list[int] = []

        @worker.task
        async def noted(x: int) -> None:
            runs.append(x)

        async with worker:
            with pytest.raises(ConfigurationError):
                noted.wait_sync(x=1)
            with pytest.raises(ConfigurationError):
                noted.submit_sync(x=2)
            await noted.wait(x=3, wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert runs == [3], violated("a refused *_sync call enqueues nothing")

    @pytest.mark.asyncio
    async def test_payload_over_max_payload_fails_at_submit(
        self, make_worker: WorkerFactory, timing: Timing, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A body over max_payload raises PayloadTooLarge at submit, before any I/O."""
        worker = make_worker(max_payload=2048)
        runs: list[int] = []

        @worker.task
        async def store(data: str) -> None:
            runs.append(len(data))

        async with worker:
            broker = await broker_of(worker)
            calls = _count_enqueues(broker, monkeypatch)
            with pytest.raises(PayloadTooLarge):
                await store.submit(data="x" * 4096)
            with pytest.raises(PayloadTooLarge):  # one oversized call sinks the whole batch
                await store.submit_many([{"data": "small"}, {"data": "x" * 4096}])
            assert calls == [], violated("an oversized submit makes no broker call")
            await store.wait(data="ok", wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert issubclass(PayloadTooLarge, upnext.SerializationError)
        assert runs == [2], violated("nothing of an oversized submit was enqueued")

    @pytest.mark.asyncio
    async def test_direct_call_runs_the_function_without_a_queue(
        self, make_worker: WorkerFactory
    ) -> None:
        """Calling a task directly runs the function here, with no queue and no job context."""
        worker = make_worker()
        contexts: list[bool] = []

        def in_job() -> bool:
            try:
                upnext.get_current_context()
            except NoJobContext:
                return False
            return True

        @worker.task
        async def add(a: int, b: int) -> int:
            contexts.append(in_job())
            return a + b

        @worker.task
        def mul(a: int, b: int) -> int:
            contexts.append(in_job())
            return a * b

        pending = add(a=1, b=2)
        assert inspect.isawaitable(pending), violated("an async task called directly is awaited")
        assert await pending == 3, violated("a direct call runs the function")
        assert mul(a=2, b=3) == 6, violated("a sync task called directly returns its value")
        assert contexts == [False, False], violated("a direct call is not a job")

    @pytest.mark.asyncio
    async def test_options_delay_and_queue_are_honoured(
        self, make_worker: WorkerFactory, timing: Timing, upnext_queue: str
    ) -> None:
        """options(delay=...) defers the job; options(queue=...) sends it to another queue."""
        other = f"{upnext_queue}-other"
        worker = make_worker(queues=[upnext_queue, other])
        delay = timing.delay(0.3)

        @worker.task
        async def where() -> list[Any]:
            return [upnext.get_current_context().queue, time.monotonic()]

        async with worker:
            submitted = time.monotonic()
            late = await where.options(delay=delay).submit()
            moved = await where.options(queue=other).submit()
            plain = await where.submit()
            results = [await f.result(timing.tolerance(LIMIT)) for f in (late, moved, plain)]
        quantum = (await capabilities_of(worker)).delay_quantum
        values = [r.value for r in results]
        assert all(v is not None for v in values)
        ran_after = values[0][1] - submitted  # type: ignore[index]  # checked above
        assert delay - EARLY_SLACK <= ran_after, violated(f"options(delay={delay}) ran early")
        assert ran_after <= quantized_upper(delay, quantum) + timing.tolerance(0.5), violated(
            f"a delayed job runs within 0.5 s of its due time (ran after {ran_after:.3f} s)"
        )
        queues = [v[0] for v in values]  # type: ignore[index]  # checked above
        assert queues == [upnext_queue, other, upnext_queue], violated(
            "options(queue=...) routes one call; the task's own queue is unchanged"
        )
        assert moved.queue == other, violated("the Future knows the job's queue")

    @pytest.mark.asyncio
    async def test_submit_many_is_one_round_trip(
        self, make_worker: WorkerFactory, timing: Timing, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """submit_many enqueues every call in one broker call; futures keep the order."""
        worker = make_worker()

        @worker.task
        async def square(x: int) -> int:
            return x * x

        async with worker:
            calls = _count_enqueues(await broker_of(worker), monkeypatch)
            futures = await square.submit_many([{"x": 1}, {"x": 2}, {"x": 3}])
            values = [(await f.result(timing.tolerance(LIMIT))).value for f in futures]
        assert calls == [3], violated(f"submit_many is one enqueue_many call, got {calls}")
        assert len({f.job_id for f in futures}) == 3, violated("each call is its own job")
        assert values == [1, 4, 9], violated("futures come back in the order of the calls")

    @pytest.mark.asyncio
    async def test_configuration_errors_at_decoration(self, make_worker: WorkerFactory) -> None:
        """Two tasks with one name, or a parameter named wait_timeout, are ConfigurationErrors."""
        worker = make_worker()

        @worker.task(name="semantics.same")
        async def first() -> None: ...

        with pytest.raises(ConfigurationError):

            @worker.task(name="semantics.same")
            async def second() -> None: ...

        with pytest.raises(ConfigurationError):

            @worker.task
            async def reserved(wait_timeout: float) -> None: ...

    @pytest.mark.asyncio
    async def test_get_current_context_outside_a_job_raises_no_job_context(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """get_current_context() raises NoJobContext (a RuntimeError) outside a job."""
        worker = make_worker()

        @worker.task
        async def inside() -> list[Any]:
            ctx = upnext.get_current_context()
            return [ctx.job_id, ctx.function, ctx.attempt, ctx.max_attempts]

        with pytest.raises(NoJobContext) as caught:
            upnext.get_current_context()
        assert isinstance(caught.value, RuntimeError), violated("NoJobContext is a RuntimeError")
        async with worker:
            future = await inside.submit()
            result = await future.result(timing.tolerance(LIMIT))
        assert result.value == [future.job_id, inside.name, 1, 1], violated(
            "inside a job the context names the job, its function and attempts"
        )


def _count_enqueues(broker: object, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap `broker.enqueue_many` to record the size of each call."""
    calls: list[int] = []
    real = broker.enqueue_many  # type: ignore[attr-defined]  # a Broker

    async def counting(envelopes: Sequence[Envelope]) -> None:
        calls.append(len(envelopes))
        await real(envelopes)

    monkeypatch.setattr(broker, "enqueue_many", counting)
    return calls
