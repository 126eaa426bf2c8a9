"""`IsolationSemantics`: a failing item isolates itself; its batch never waits, reruns or is lost.

Numbers are checked once, at the edge: an out-of-range duration fails at
decoration or submit, naming the option, before any I/O; a job body read from
the broker with one (a `result_ttl` no backend can store) is dead-lettered
alone, as undecodable with the reason, while the valid jobs received and
settled beside it complete exactly once; a result holding NaN or Infinity
(which JSON cannot hold) is an unserializable result, never a silent null.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from typing import Any

import pytest

import upnext
from upnext import ConfigurationError, SerializationError, TaskExecutionError
from upnext.broker.protocol import Envelope
from upnext.testing.semantics_api import _count_enqueues
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    broker_of,
    capabilities_of,
    dlq_entry,
    violated,
)

__all__ = ["IsolationSemantics"]

LIMIT = 10.0
VALID = 40  # jobs on each side of the bad one, all received and settled in shared batches


class IsolationSemantics(SemanticsBase):
    """One bad job among many: it alone fails, every other one completes once."""

    @pytest.mark.asyncio
    @pytest.mark.parametrize("number", ["1e300", "Infinity", "NaN"])
    async def test_a_failing_item_isolates_itself(
        self, make_worker: WorkerFactory, timing: Timing, number: str
    ) -> None:
        """A body with result_ttl=`number` is dead-lettered alone; its neighbours run once."""
        worker = make_worker(concurrency=VALID)
        runs: Counter[int] = Counter()

        @worker.task
        async def work(i: int) -> int:
            runs[i] += 1
            return i

        bad_id = uuid.uuid4().hex
        bad = _body(bad_id, work.name, worker.name, number)
        futures = await work.submit_many([{"i": i} for i in range(VALID)])
        await (await broker_of(worker)).enqueue_many([Envelope(bad_id, worker.name, bad)])
        futures += await work.submit_many([{"i": i} for i in range(VALID, 2 * VALID)])
        async with worker:
            values = [await f.value(timing.tolerance(LIMIT)) for f in futures]
            with pytest.raises(TaskExecutionError):  # its waiters still get an outcome
                await upnext.Future(work, bad_id, worker.name).result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
            entry = await _dead_entry(worker, bad_id)
        assert values == list(range(2 * VALID)), violated("every valid job of the batch completes")
        assert runs == Counter(range(2 * VALID)), violated(
            "every valid job runs exactly once, and the bad one never"
        )
        if entry is not None:
            assert entry.error is not None
            assert "result_ttl" in entry.error.message, violated("the DLQ entry names the field")

    @pytest.mark.asyncio
    async def test_out_of_range_numbers_fail_at_the_edge(
        self, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """NaN, Infinity or over 90 days: ConfigurationError naming the option, nothing sent."""
        worker = make_worker()
        for option in ("timeout", "result_ttl", "retry_delay", "retry_delay_max"):
            for value in (math.nan, math.inf, 1e17):
                options: dict[str, Any] = {option: value}
                with pytest.raises(ConfigurationError, match=option):
                    worker.task(name=f"edge.{option}", **options)(_nothing)

        @worker.task
        async def scaled(x: float) -> None: ...

        calls = _count_enqueues(await broker_of(worker), monkeypatch)
        for delay in (math.nan, math.inf, -1.0, 1e300):
            with pytest.raises(ConfigurationError, match="delay"):
                await scaled.options(delay=delay).submit(x=1.0)
        with pytest.raises(SerializationError):  # JSON has no NaN: never a silent null
            await scaled.submit(x=math.nan)
        assert calls == [], violated("an out-of-range number is refused before any I/O")

    @pytest.mark.asyncio
    async def test_a_nan_result_is_an_unserializable_result(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A task returning NaN fails as an unserializable result instead of storing null."""
        worker = make_worker()

        @worker.task(retries=2)
        async def not_a_number() -> float:
            return math.nan

        async with worker:
            future = await not_a_number.submit()
            with pytest.raises(TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
            entry = await dlq_entry(worker, future.queue, future.job_id)
        assert "NaN" in (caught.value.error or ""), violated("the error names the NaN")
        if (await capabilities_of(worker)).dlq_access is not None:
            assert entry is not None, violated("the job is dead-lettered")
            assert entry.reason == "unserializable result"


def _body(job_id: str, function: str, queue: str, result_ttl: str) -> bytes:
    """A job body as core writes it, but with `result_ttl` as given (raw JSON text)."""
    return (
        f'{{"v": 1, "id": "{job_id}", "fn": "{function}", "queue": "{queue}",'
        f' "kwargs": {{"i": -1}}, "result_ttl": {result_ttl}}}'
    ).encode()


def _nothing() -> None:
    """A task body for decorations that must fail."""


async def _dead_entry(worker: upnext.Worker, job_id: str) -> upnext.DeadLetterEntry | None:
    """The bad job's DLQ entry, which must exist and say why (None without dlq_access)."""
    if (await capabilities_of(worker)).dlq_access is None:
        return None
    entry = await dlq_entry(worker, worker.name, job_id)
    assert entry is not None, violated("the bad job alone is dead-lettered")
    assert entry.reason == "undecodable", violated("its reason says it is undecodable")
    return entry
