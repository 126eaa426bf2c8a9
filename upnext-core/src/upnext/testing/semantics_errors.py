"""`ErrorSemantics`: what a caller sees when a job fails, and what is dead-lettered at once.

Covers docs/errors.md (error types, catching errors, gather) and the
failures that skip retries in docs/retries.md: undecodable body, unknown
task, arguments that fail validation on the worker, an unserializable result.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

import upnext
from upnext import TaskExecutionError, TaskTimeoutError
from upnext.broker.protocol import Envelope
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    broker_of,
    capabilities_of,
    dlq_entry,
    violated,
)

__all__ = ["ErrorSemantics"]

LIMIT = 5.0


class ErrorSemantics(SemanticsBase):
    """Failures as the caller and the dead-letter queue see them."""

    @pytest.mark.asyncio
    async def test_seed_task_execution_error_fields(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: TaskExecutionError carries job_id, status "failed", error "Type: message"."""
        worker = make_worker()

        @worker.task(retries=1, retry_delay=timing.delay(0.02))
        async def risky_task(x: int) -> int:
            raise ValueError(f"bad x={x}")

        async with worker:
            future = await risky_task.submit(x=1)
            with pytest.raises(TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
        e = caught.value
        assert type(e) is TaskExecutionError, violated("a plain failure is not a timeout")
        assert e.job_id == future.job_id, violated("e.job_id names the job that failed")
        assert e.status == "failed", violated('e.status is "failed" for a failed job')
        assert e.error == "ValueError: bad x=1", violated('e.error is "Type: message"')
        result = e.task_result
        assert isinstance(result, upnext.TaskResult), violated("e.task_result is a TaskResult")
        assert (result.ok, result.status, result.attempts) == (False, "failed", 2), violated(
            "task_result says failed, not ok, after both attempts"
        )
        assert result.job_id == future.job_id
        assert result.error_info is not None
        assert result.error_info.type == "ValueError"
        assert "ValueError" in (result.error_info.traceback or ""), violated(
            "the error carries the task's traceback"
        )

    @pytest.mark.asyncio
    async def test_seed_wait_and_result_always_raise_on_failure(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: .wait(), future.result() and .value() raise; never a TaskResult with ok=False."""
        worker = make_worker()

        @worker.task
        async def risky_task(x: int) -> int:
            raise KeyError(x)

        async with worker:
            with pytest.raises(TaskExecutionError):
                await risky_task.wait(x=1, wait_timeout=timing.tolerance(LIMIT))
            future = await risky_task.submit(x=2)
            for _ in range(2):  # reading a result twice raises twice
                with pytest.raises(TaskExecutionError):
                    await future.result(timing.tolerance(LIMIT))
                with pytest.raises(TaskExecutionError):
                    await future.value(timing.tolerance(LIMIT))

    @pytest.mark.asyncio
    async def test_seed_catching_errors_example(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: the try/except ladder takes the right branch for success, timeout, failure."""
        worker = make_worker()

        @worker.task(timeout=timing.delay(0.2))
        async def risky_task(x: int) -> int:
            if x == 1:
                return 10
            if x == 2:
                await asyncio.sleep(timing.delay(5.0))
            raise RuntimeError(f"x={x}")

        async def seed_ladder(x: int) -> list[str]:
            out: list[str] = []
            try:
                result = await risky_task.wait(x=x, wait_timeout=timing.tolerance(LIMIT))
                out.append(f"Success: {result.value}")
            except TaskTimeoutError as e:
                out.append(f"Timed out: {e.error}")
            except TaskExecutionError as e:
                out.append(f"Failed: {e.error}")
                out.append(f"Status: {e.status}")
                out.append(f"Attempts: {e.task_result.attempts}")
            return out

        async with worker:
            ok, timed_out, failed = [await seed_ladder(x) for x in (1, 2, 3)]
        assert ok == ["Success: 10"], violated("a completed job returns its value")
        assert len(timed_out) == 1, violated("a timeout is caught as TaskTimeoutError")
        assert timed_out[0].startswith("Timed out: ")
        assert len(timed_out[0]) > len("Timed out: "), violated("e.error says what happened")
        assert failed == ["Failed: RuntimeError: x=3", "Status: failed", "Attempts: 1"], violated(
            "a failure is caught as TaskExecutionError with error, status and attempts"
        )

    @pytest.mark.asyncio
    async def test_seed_gather_return_exceptions(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: gather(return_exceptions=True) returns each TaskExecutionError in place."""
        worker = make_worker()

        @worker.task
        async def task_a(x: int) -> int:
            return x * 10

        @worker.task
        async def task_b(x: int) -> int:
            raise ValueError(f"b failed with x={x}")

        async with worker:
            results = await upnext.gather(
                task_a.wait(x=1, wait_timeout=timing.tolerance(LIMIT)),
                task_b.wait(x=2, wait_timeout=timing.tolerance(LIMIT)),
                task_a.wait(x=3, wait_timeout=timing.tolerance(LIMIT)),
                return_exceptions=True,
            )
            with pytest.raises(TaskExecutionError):  # without the flag, gather raises
                await upnext.gather(task_b.wait(x=4, wait_timeout=timing.tolerance(LIMIT)))
        first, second, third = results
        assert isinstance(first, upnext.TaskResult), violated("successes come back as TaskResult")
        assert isinstance(third, upnext.TaskResult)
        assert (first.value, third.value) == (10, 30), violated("results keep their order")
        assert isinstance(second, TaskExecutionError), violated(
            "a failure is returned in place as TaskExecutionError, not raised"
        )
        assert second.error == "ValueError: b failed with x=2"

    @pytest.mark.asyncio
    async def test_bad_argument_fails_in_the_caller(self, make_worker: WorkerFactory) -> None:
        """Arguments are validated at submit: a bad one raises SerializationError naming it."""
        worker = make_worker()

        @worker.task
        async def typed(count: int) -> int:
            return count

        with pytest.raises(upnext.SerializationError, match="count"):
            await typed.submit(count="not a number")  # type: ignore[arg-type]  # on purpose

    @pytest.mark.asyncio
    async def test_unknown_task_is_dead_lettered_at_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A job for a task the worker does not have is dead-lettered at once, no retries."""
        producer, consumer = make_worker(), make_worker()

        @producer.task(name="semantics.not_on_the_worker", retries=3)
        async def elsewhere() -> None: ...

        async with consumer:
            future = await elsewhere.submit()
            with pytest.raises(TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            await consumer.join(timeout=timing.tolerance(LIMIT))
            await _check_dead(consumer, future.queue, future.job_id, attempts=0)
        assert caught.value.task_result.attempts == 0, violated("an unknown task runs no attempt")

    @pytest.mark.asyncio
    async def test_arguments_failing_validation_on_the_worker_dead_letter_at_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Arguments the worker's signature rejects dead-letter the job at once, body never run."""
        producer, consumer = make_worker(), make_worker()
        runs: list[Any] = []

        @producer.task(name="semantics.typed")
        async def loose(x: str) -> None: ...

        @consumer.task(name="semantics.typed", retries=3)
        async def strict(x: int) -> None:
            runs.append(x)

        async with consumer:
            future = await loose.submit(x="not a number")
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            await consumer.join(timeout=timing.tolerance(LIMIT))
            entry = await _check_dead(consumer, future.queue, future.job_id, attempts=0)
        assert runs == [], violated("a job with invalid arguments never runs its body")
        if entry is not None:
            assert entry.error is not None
            assert "x" in entry.error.message, violated("the error names the failing field")

    @pytest.mark.asyncio
    async def test_body_over_the_workers_max_payload_is_dead_lettered_at_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """max_payload is checked on decode too: a worker dead-letters a body over its limit."""
        producer, consumer = make_worker(), make_worker(max_payload=1024)
        runs: list[int] = []

        @producer.task(name="semantics.sized")
        async def send(data: str) -> None: ...

        @consumer.task(name="semantics.sized", retries=3)
        async def receive(data: str) -> None:
            runs.append(len(data))

        async with consumer:
            future = await send.submit(data="x" * 4096)
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            await consumer.join(timeout=timing.tolerance(LIMIT))
            await _check_dead(consumer, future.queue, future.job_id, attempts=0)
        assert runs == [], violated("a body over max_payload is never run")

    @pytest.mark.asyncio
    async def test_unserializable_result_dead_letters_at_once(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A result that can't be serialized dead-letters the job at once, without retries."""
        worker = make_worker()
        runs: list[int] = []

        @worker.task(retries=3, retry_delay=timing.delay(0.02))
        async def returns_junk() -> Any:
            runs.append(1)
            return object()

        async with worker:
            future = await returns_junk.submit()
            with pytest.raises(TaskExecutionError) as caught:
                await future.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
            await _check_dead(worker, future.queue, future.job_id, attempts=None)
        assert runs == [1], violated("an unserializable result is not retried")
        assert caught.value.task_result.attempts == 1
        assert caught.value.error is not None
        assert "Serializ" in caught.value.error, violated("the error says it is serialization")

    @pytest.mark.asyncio
    async def test_unserializable_result_attempt_is_in_the_dlq_history(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """The DLQ entry of an unserializable result records the attempt that produced it."""
        worker = make_worker()

        @worker.task(retries=3)
        async def returns_junk() -> Any:
            return object()

        async with worker:
            future = await returns_junk.submit()
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
            if (await capabilities_of(worker)).dlq_access is None:
                pytest.skip("needs capability dlq_access")
            await _check_dead(worker, future.queue, future.job_id, attempts=1)

    @pytest.mark.asyncio
    async def test_undecodable_body_is_dead_lettered_with_its_reason(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Bytes that are not a job, or an unknown format version, are dead-lettered at once."""
        worker = make_worker()

        @worker.task
        async def anything() -> None: ...

        garbage_id, future_id = uuid.uuid4().hex, uuid.uuid4().hex
        future_body = json.dumps({"v": 99, "id": future_id, "fn": anything.name}).encode()
        async with worker:
            await (await broker_of(worker)).enqueue_many(
                [
                    Envelope(garbage_id, worker.name, b"\x00\xffnot a job at all"),
                    Envelope(future_id, worker.name, future_body),
                ]
            )
            for job_id in (garbage_id, future_id):
                with pytest.raises(TaskExecutionError):  # its waiters still get an outcome
                    await upnext.Future(anything, job_id, worker.name).result(
                        timing.tolerance(LIMIT)
                    )
            await worker.join(timeout=timing.tolerance(LIMIT))
            garbage = await _check_dead(worker, worker.name, garbage_id, attempts=0)
            newer = await _check_dead(worker, worker.name, future_id, attempts=0)
        for entry in (garbage, newer):
            if entry is not None:
                assert entry.payload is None, violated("an undecodable entry has no payload")
                assert entry.raw, violated("an undecodable entry keeps the raw bytes")
                assert not entry.replayable
        if newer is not None:
            assert "version" in newer.reason, violated("an unknown format version says so")


async def _check_dead(
    worker: upnext.Worker, queue: str, job_id: str, *, attempts: int | None
) -> upnext.DeadLetterEntry | None:
    """Assert the job sits in the DLQ with a reason and `attempts` runs (if DLQ is readable)."""
    if (await capabilities_of(worker)).dlq_access is None:
        return None
    entry = await dlq_entry(worker, queue, job_id)
    assert entry is not None, violated(f"job {job_id} must be in the dead-letter queue")
    assert entry.reason, violated("a dead-letter entry says why")
    assert entry.error is not None, violated("a dead-letter entry keeps its error")
    runs = [a for a in entry.attempts if a.outcome != "lost"]
    assert attempts is None or len(runs) == attempts, violated(
        f"dead-lettered at once: {attempts} attempt(s) recorded, got {len(runs)}"
    )
    return entry
