"""The worker tick: its semantics on memory://, and what only a fake store can show.

`WorkerTickSemantics` runs here on a MemoryBroker; the backends run it on
their own stores. The rest drives the tick over wrappers of a real memory
store that fail, hang, or race a release, and reads the registry through a
`Worker`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio
import upnext
from upnext._tick import HeldSlots, WorkerTick, encode_registry_entry
from upnext.broker.memory import MemoryBroker
from upnext.broker.memory_state import MemoryStateStore
from upnext.broker.state import STATE_VALUE_MAX, SlotClaim, SlotGrant, StateStore, StateWrite
from upnext.errors import BrokerUnavailable, ConfigurationError
from upnext.testing.tick import FakeConsumer, WorkerTickSemantics
from upnext.workers import RunningJob, WorkerInfo, live_workers, read_registry


class TestMemoryTick(WorkerTickSemantics):
    """The tick's semantics on a fresh MemoryBroker."""

    @pytest_asyncio.fixture
    async def broker(self) -> AsyncIterator[MemoryBroker]:
        """A fresh broker, built directly (not through the per-process registry)."""
        broker = MemoryBroker(f"memory://t-{uuid.uuid4().hex}")
        await broker.connect()
        yield broker
        await broker.aclose()


class FlakyStore(MemoryStateStore):
    """A memory store whose calls fail (or hang) while `down` (or `stuck`) is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.stuck = False
        self.puts = 0

    async def state_put(
        self, writes: Sequence[StateWrite], *, scope: str | None = None
    ) -> list[bool]:
        self.puts += 1
        if self.down:
            raise BrokerUnavailable("store unreachable")
        if self.stuck:
            await asyncio.Event().wait()
        return await super().state_put(writes, scope=scope)


def _tick(store: StateStore, consumer: FakeConsumer, **options: object) -> WorkerTick:
    return WorkerTick(
        store,
        worker_id=options.pop("worker_id", "w1"),  # type: ignore[arg-type]  # a str when given
        name="t",
        queues=["q"],
        concurrency=2,
        running=consumer.running,
        on_cancel=consumer.on_cancel,
        interval=0.05,
        **options,  # type: ignore[arg-type]  # only `slots` is passed
    )


async def test_an_outage_is_logged_once_and_the_tick_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, consumer = FlakyStore(), FakeConsumer()
    store.down = True
    tick = _tick(store, consumer)
    with caplog.at_level(logging.WARNING, logger="upnext.worker"):
        tick.start()
        await asyncio.sleep(0.3)
        failing = [r.getMessage() for r in caplog.records]
        assert store.puts >= 4  # it kept trying, once a tick
        store.down = False
        await asyncio.sleep(0.15)
        await tick.stop(deregister=False)
    assert len(failing) == 1
    assert "store unreachable" in failing[0]
    assert "succeeded again" in caplog.records[-1].getMessage()
    assert [w.worker_id for w in await read_registry(store)] == ["w1"]


async def test_a_hanging_store_costs_a_beat_not_the_loop() -> None:
    store, consumer = FlakyStore(), FakeConsumer()
    store.stuck = True
    tick = _tick(store, consumer)
    tick.start()
    await asyncio.sleep(0.3)
    assert store.puts >= 4  # each hung tick was abandoned at its deadline
    started = time.monotonic()
    await tick.stop()  # its deregistering put hangs too, and is bounded the same way
    assert time.monotonic() - started < 0.5


async def test_on_cancel_errors_are_logged_and_ticking_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, consumer = MemoryStateStore(), FakeConsumer()
    consumer.run("a")
    consumer.run("b")
    seen: list[str] = []

    def cancel(job_id: str) -> None:
        seen.append(job_id)
        raise RuntimeError("consumer broke")

    tick = _tick(store, consumer)
    tick.on_cancel = cancel
    await store.state_put(
        [StateWrite("upnext:cancel:a", b"user"), StateWrite("upnext:cancel:b", b"user")]
    )
    with caplog.at_level(logging.ERROR, logger="upnext.worker"):
        await tick.tick()
    assert seen == ["a", "b"]
    assert len(caplog.records) == 2


class ReleasingStore(MemoryStateStore):
    """Runs `during` while a slots_acquire_many is in flight (a release racing the tick)."""

    def __init__(self, held: HeldSlots, during: list[SlotClaim]) -> None:
        super().__init__()
        self.held, self.during = held, during

    async def slots_acquire_many(self, claims: Sequence[SlotClaim]) -> list[SlotGrant]:
        for claim in self.during:
            self.held.drop(claim.key, claim.member, scope=claim.scope)
            await self.slots_release(claim.key, [claim.member], scope=claim.scope)
        return await super().slots_acquire_many(claims)


async def test_a_slot_released_during_a_refresh_is_given_back() -> None:
    held, claim = HeldSlots(), SlotClaim("k", "job-1", 1, 60.0)
    store = ReleasingStore(held, [claim])
    assert (await store.slots_acquire("k", "job-1", limit=1, ttl=60.0)).acquired
    held.hold(claim)
    await _tick(store, FakeConsumer(), slots=held).tick()
    assert (await store.slots_acquire("k", "job-2", limit=1, ttl=60.0)).acquired


async def test_a_lapsed_slot_taken_by_another_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, held = MemoryStateStore(), HeldSlots()
    held.hold(SlotClaim("k", "mine", 1, 60.0))
    await store.slots_acquire("k", "thief", limit=1, ttl=60.0)
    tick = _tick(store, FakeConsumer(), slots=held)
    with caplog.at_level(logging.WARNING, logger="upnext.worker"):
        await tick.tick()
        await tick.tick()
    assert [r.getMessage() for r in caplog.records] == [
        "slot mine of k lapsed and was taken (1 held): it is no longer held here"
    ]


def test_a_registry_entry_always_fits_one_state_value() -> None:
    jobs = [
        RunningJob(job_id=uuid.uuid4().hex, function="m.f" * 20, attempt=1, started_at=1.0)
        for _ in range(2000)
    ]
    info = WorkerInfo(
        worker_id="w",
        name="n",
        host="h",
        pid=1,
        queues=["q"],
        concurrency=2000,
        started_at=0.0,
        beat_at=1.0,
        running_count=len(jobs),
        running=jobs,
    )
    data = encode_registry_entry(info)
    assert len(data) <= STATE_VALUE_MAX
    decoded = WorkerInfo.model_validate_json(data)
    assert decoded.running_count == 2000
    assert 0 < len(decoded.running) < 2000
    assert decoded.running == jobs[: len(decoded.running)]


def test_bad_tick_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="invalid tick interval"):
        WorkerTick(
            MemoryStateStore(),
            worker_id="w",
            name="n",
            queues=[],
            concurrency=1,
            running=list,
            on_cancel=print,
            interval=0,
        )


async def test_live_workers_reads_the_registry_of_a_workers_broker() -> None:
    worker = upnext.Worker("reg", broker=f"memory://reg-{uuid.uuid4().hex}")
    client = await worker.client()
    tick = _tick(client.require_state("test"), FakeConsumer(), worker_id="w-live")
    await tick.tick()
    assert [w.worker_id for w in await live_workers(worker)] == ["w-live"]
    await tick.stop()
    assert await live_workers(worker) == []
    await worker.aclose()
