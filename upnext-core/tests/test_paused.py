"""Pausing a queue: the tick's read, the consumer's hold-back, the public functions.

The behaviour across brokers is `upnext.testing.semantics_pause`; these check
what it cannot see: one read per tick for cancel and pause markers alike,
buffered jobs of a queue paused meanwhile released with no attempt charged,
and the arguments refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
import upnext
from upnext._statekeys import cancel_key, paused_key
from upnext._tick import WorkerTick
from upnext.broker.memory_state import MemoryStateStore
from upnext.broker.state import StateEntry, StateWrite
from upnext.queues import pause_queue, resume_queue
from upnext.testing.tick import FakeConsumer


class CountingStore(MemoryStateStore):
    """A memory store that records the keys of each `state_get`."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[list[str]] = []

    async def state_get(
        self, keys: Sequence[str], *, scope: str | None = None
    ) -> list[StateEntry | None]:
        self.gets.append(list(keys))
        return await super().state_get(keys, scope=scope)


async def test_cancel_and_pause_markers_are_one_read_per_tick() -> None:
    """The pause markers ride in the cancel markers' call; on_paused gets the paused set."""
    store, consumer, seen = CountingStore(), FakeConsumer(), list[frozenset[str] | None]()
    tick = WorkerTick(
        store,
        worker_id="w1",
        name="t",
        queues=["a", "b"],
        concurrency=1,
        running=consumer.running,
        on_cancel=consumer.on_cancel,
        on_paused=seen.append,
    )
    consumer.run("j1")
    await store.state_put([StateWrite(paused_key("b"), b"{}"), StateWrite(cancel_key("j1"), b"x")])
    await tick.tick()
    assert store.gets == [[cancel_key("j1"), paused_key("a"), paused_key("b")]]
    assert seen == [frozenset({"b"})]
    assert consumer.cancelled == ["j1"]
    consumer.jobs.clear()
    await tick.tick()  # no jobs: the pause markers are still read
    assert store.gets[1] == [paused_key("a"), paused_key("b")]


async def test_buffered_jobs_of_a_paused_queue_go_back_unstarted_and_uncharged() -> None:
    """Prefetched behind a running job, then paused: released, they start only after resume."""
    worker = upnext.Worker(
        f"q-{uuid.uuid4().hex[:8]}", f"memory://t-{uuid.uuid4().hex}", concurrency=1
    )
    started: list[int] = []

    @worker.task
    async def job(n: int, hold: float = 0.0) -> int:
        started.append(n)
        await asyncio.sleep(hold)
        return n

    async with worker:
        first = await job.submit(0, hold=1.3)
        rest = [await job.submit(n) for n in (1, 2)]
        await asyncio.sleep(0.1)  # prefetched behind the running job
        assert worker.consumer is not None
        assert worker.consumer.buffer, "a job waits in the prefetch buffer"
        await pause_queue(worker, worker.name)
        assert await first.value(timeout=3.0) == 0  # the running job finishes
        await asyncio.sleep(0.1)
        assert started == [0]
        assert not worker.consumer.buffer
        await resume_queue(worker, worker.name)
        results = [await future.result(timeout=3.0) for future in rest]
    assert [r.value for r in results] == [1, 2]
    assert [r.attempts for r in results] == [1, 1], "a release charges no attempt"


async def test_bad_names_and_reasons_are_refused() -> None:
    """An empty or unprintable queue name, or an overlong reason: ConfigurationError."""
    worker = upnext.Worker("q", f"memory://t-{uuid.uuid4().hex}")
    try:
        for name in ("", "a\nb"):
            with pytest.raises(upnext.ConfigurationError, match="printable"):
                await pause_queue(worker, name)
        with pytest.raises(upnext.ConfigurationError, match="at most"):
            await pause_queue(worker, "q", reason="x" * 501)
        assert not await resume_queue(worker, "q"), "resuming a queue not paused is False"
    finally:
        await worker.aclose()


async def test_a_store_unread_at_start_lets_the_worker_receive(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first read of the pauses fails: the worker runs jobs anyway, and says why."""
    worker = upnext.Worker("unread", f"memory://unread-{uuid.uuid4().hex}", load_plugins=False)

    @worker.task
    async def job() -> int:
        return 7

    state = (await worker.client()).state
    assert state is not None

    async def down(keys: Sequence[str], *, scope: str | None = None) -> list[StateEntry | None]:
        raise upnext.BrokerUnavailable("store down")

    monkeypatch.setattr(state, "state_get", down)
    with caplog.at_level("WARNING", logger="upnext.worker"):
        async with worker:
            assert (await job.wait(wait_timeout=5.0)).value == 7
    assert "paused queues could not be read at start" in caplog.text
