"""`DeadLetterSemantics`: what the DLQ keeps, and how replay behaves, through a real worker.

Covers docs/dead-letter-queue.md (payload, final error, all attempt
metadata, replay): replay makes a new job
with the same function, queue, arguments and lineage, `replay_of` set and
attempt 1; the original result stays failed; of two concurrent replays one
wins; an undecodable entry can't be replayed. Needs `dlq_access`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

import upnext
from upnext import DeadLetterNotFound, TaskExecutionError, UnsupportedOperation
from upnext.broker.protocol import Envelope
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    broker_of,
    dlq_entry,
    need_dlq,
    violated,
)

__all__ = ["DeadLetterSemantics"]

LIMIT = 5.0
TRACEBACK_LIMIT = 16 * 1024


async def _dead(worker: upnext.Worker, queue: str, job_id: str) -> upnext.DeadLetterEntry:
    entry = await dlq_entry(worker, queue, job_id)
    assert entry is not None, violated(f"failed job {job_id} must have a DLQ entry")
    return entry


class DeadLetterSemantics(SemanticsBase):
    """The dead-letter queue as docs/dead-letter-queue.md describes it."""

    @pytest.mark.asyncio
    async def test_seed_dlq_keeps_payload_final_error_and_every_attempt(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: a job that exhausts its retries is in the DLQ with payload, error, attempts."""
        worker = make_worker()

        @worker.task(retries=2, retry_delay=timing.delay(0.02), retry_backoff=1.0)
        async def charge(order_id: int, note: str) -> None:
            raise ValueError(f"card declined {upnext.get_current_context().attempt}")

        async with worker:
            await need_dlq(worker)
            before = time.time()
            future = await charge.submit(order_id=42, note="gift")
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            entry = await _dead(worker, future.queue, future.job_id)
        assert (entry.function, entry.queue) == (charge.name, future.queue), violated(
            "the entry names the job's function and queue"
        )
        assert entry.payload is not None
        assert entry.payload.kwargs == {"order_id": 42, "note": "gift"}, violated(
            "the entry keeps the original payload"
        )
        assert entry.reason, violated("the entry says why it was dead-lettered")
        assert entry.error is not None
        assert (entry.error.type, entry.error.message) == ("ValueError", "card declined 3"), (
            violated("the entry keeps the final error")
        )
        assert "card declined 3" in (entry.error.traceback or ""), violated("with its traceback")
        assert entry.failed_at.timestamp() >= before - 1.0
        assert [(a.number, a.outcome) for a in entry.attempts] == [
            (1, "error"),
            (2, "error"),
            (3, "error"),
        ], violated("the entry records every attempt, numbered, with its outcome")
        for n, record in enumerate(entry.attempts, start=1):
            assert record.error == f"ValueError: card declined {n}", violated(
                "each attempt's error"
            )
            assert record.worker, violated("each attempt names its worker")
            assert record.started is not None
            assert record.finished is not None
            assert record.started <= record.finished, violated("attempt times are ordered")

    @pytest.mark.asyncio
    async def test_traceback_is_bounded_to_16_kib(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """The final error's traceback in a DLQ entry is at most 16 KiB."""
        worker = make_worker()

        @worker.task
        async def deep_failure() -> None:
            # a message this long makes the formatted traceback far longer than 16 KiB
            raise ValueError("x" * (3 * TRACEBACK_LIMIT) + " very deep")

        async with worker:
            await need_dlq(worker)
            future = await deep_failure.submit()
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            entry = await _dead(worker, future.queue, future.job_id)
        assert entry.error is not None
        traceback = entry.error.traceback or ""
        assert "very deep" in traceback, violated("a bounded traceback keeps its last lines")
        assert len(traceback.encode()) <= TRACEBACK_LIMIT, violated(
            f"a stored traceback is at most 16 KiB, got {len(traceback.encode())} bytes"
        )

    @pytest.mark.asyncio
    async def test_replay_makes_a_new_job_with_the_same_call_and_lineage(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Replay: new job id, same function/queue/args/lineage, replay_of set, attempt 1."""
        worker = make_worker()
        seen: list[tuple[upnext.Context, Any]] = []

        @worker.task(retries=1, retry_delay=timing.delay(0.02))
        async def child(item: str) -> str:
            ctx = upnext.get_current_context()
            seen.append((ctx, item))
            if ctx.replay_of is None:
                raise ValueError("not yet")
            return item.upper()

        @worker.task
        async def parent() -> str:
            try:
                await child.wait(item="widget", wait_timeout=timing.tolerance(LIMIT))
            except TaskExecutionError as exc:
                return exc.job_id
            return ""

        async with worker:
            await need_dlq(worker)
            parent_result = await parent.wait(wait_timeout=timing.tolerance(LIMIT))
            original = parent_result.value
            assert original, violated("the child failed and surfaced in the parent")
            entry = await _dead(worker, worker.name, original)
            new_id = await worker.dlq.replay(entry.id)
            replayed = await upnext.Future(child, new_id, worker.name).result(
                timing.tolerance(LIMIT)
            )
            with pytest.raises(TaskExecutionError) as still:
                await upnext.Future(child, original, worker.name).result(timing.tolerance(1.0))
            with pytest.raises(DeadLetterNotFound):
                await worker.dlq.get(entry.id)
        ctx, item = seen[-1]
        assert new_id != original, violated("a replay is a new job with a new id")
        assert (ctx.job_id, ctx.function, ctx.queue, item) == (
            new_id,
            child.name,
            worker.name,
            "widget",
        ), violated("the replayed job keeps function, queue and arguments")
        assert (ctx.parent_id, ctx.root_id) == (parent_result.job_id, parent_result.job_id), (
            violated("the replayed job keeps the original's lineage")
        )
        assert (ctx.replay_of, ctx.attempt) == (original, 1), violated(
            "the replayed job records replay_of and starts at attempt 1"
        )
        assert replayed.value == "WIDGET"
        assert still.value.status == "failed", violated("the original's result stays failed")

    @pytest.mark.asyncio
    async def test_concurrent_replays_one_wins(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Of two concurrent replays of one entry, one wins; the other gets DeadLetterNotFound."""
        worker = make_worker()
        runs: list[str | None] = []

        @worker.task
        async def once() -> None:
            ctx = upnext.get_current_context()
            runs.append(ctx.replay_of)
            if ctx.replay_of is None:
                raise upnext.Reject("first run fails")

        async with worker:
            await need_dlq(worker)
            future = await once.submit()
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            entry = await _dead(worker, future.queue, future.job_id)
            outcomes = await asyncio.gather(
                worker.dlq.replay(entry.id), worker.dlq.replay(entry.id), return_exceptions=True
            )
            await worker.join(timeout=timing.tolerance(LIMIT))
        winners = [o for o in outcomes if isinstance(o, str)]
        losers = [o for o in outcomes if isinstance(o, DeadLetterNotFound)]
        assert (len(winners), len(losers)) == (1, 1), violated(
            f"exactly one concurrent replay wins, the other is DeadLetterNotFound: {outcomes!r}"
        )
        assert runs == [None, future.job_id], violated("the entry was replayed exactly once")

    @pytest.mark.asyncio
    async def test_replay_of_an_undecodable_entry_is_refused(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Replaying an entry whose body never decoded raises UnsupportedOperation; it stays."""
        worker = make_worker()

        @worker.task
        async def anything() -> None: ...

        job_id = uuid.uuid4().hex
        async with worker:
            await need_dlq(worker)
            broker = await broker_of(worker)
            await broker.enqueue_many([Envelope(job_id, worker.name, b"\xfe\xffgarbage")])
            with pytest.raises(TaskExecutionError):
                await upnext.Future(anything, job_id, worker.name).result(timing.tolerance(LIMIT))
            entry = await _dead(worker, worker.name, job_id)
            with pytest.raises(UnsupportedOperation):
                await worker.dlq.replay(entry.id)
            kept = await worker.dlq.get(entry.id)
        assert kept.id == entry.id, violated("a refused replay leaves the entry in place")
