"""The client: group commit (Batcher), broker/store pairing, connect once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
import upnext
from upnext import _discovery
from upnext._client import Batcher, Factories
from upnext._discovery import RESULT_STORE_GROUP, register
from upnext._serializer import ResultRecord
from upnext.broker.memory import MemoryBroker
from upnext.errors import BrokerError, ConfigurationError, LeaseLost


class Flush:
    """A flush function that blocks until released, recording each batch."""

    def __init__(self, outcomes: Any = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.outcomes = outcomes

    async def __call__(self, items: Sequence[int]) -> Any:
        self.batches.append(list(items))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        if callable(self.outcomes):
            return self.outcomes(items)
        return self.outcomes


async def _started(*coros: Any) -> list[asyncio.Task[Any]]:
    """Start each coroutine as a task, letting each reach its first await in order."""
    tasks = []
    for coro in coros:
        tasks.append(asyncio.ensure_future(coro))
        await asyncio.sleep(0)
    return tasks


async def test_single_item_is_flushed_at_once() -> None:
    flush = Flush(outcomes=lambda items: [i * 10 for i in items])
    flush.gate.set()
    batcher: Batcher[int, int] = Batcher(flush)
    assert await batcher.submit(1) == 10
    assert flush.batches == [[1]]
    assert len(batcher) == 0


async def test_items_arriving_meanwhile_join_the_next_call() -> None:
    flush = Flush(outcomes=lambda items: [i * 10 for i in items])
    batcher: Batcher[int, int] = Batcher(flush)
    tasks = await _started(*(batcher.submit(i) for i in range(1, 5)))
    assert flush.batches == [[1]]
    assert len(batcher) == 4  # three waiting plus the call in flight
    flush.gate.set()
    assert await asyncio.gather(*tasks) == [10, 20, 30, 40]
    assert flush.batches == [[1], [2, 3, 4]]
    assert flush.max_in_flight == 1


async def test_none_outcome_answers_every_item() -> None:
    flush = Flush(outcomes=None)
    batcher: Batcher[int, None] = Batcher(flush)
    tasks = await _started(batcher.submit(1), batcher.submit(2), batcher.submit(3))
    flush.gate.set()
    assert await asyncio.gather(*tasks) == [None, None, None]


async def test_per_item_outcomes_are_returned_not_raised() -> None:
    lost = LeaseLost("gone")
    flush = Flush(outcomes=lambda items: [lost if i == 2 else None for i in items])
    flush.gate.set()
    batcher: Batcher[int, LeaseLost | None] = Batcher(flush)
    assert list(await asyncio.gather(batcher.submit(1), batcher.submit(2))) == [None, lost]


async def test_a_failed_flush_fails_its_batch_only() -> None:
    calls: list[list[int]] = []

    async def flaky(items: Sequence[int]) -> None:
        calls.append(list(items))
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise ConnectionError("broker down")

    batcher: Batcher[int, None] = Batcher(flaky)
    tasks = await _started(batcher.submit(1), batcher.submit(2), batcher.submit(3))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], ConnectionError)
    assert results[1:] == [None, None]
    assert calls == [[1], [2, 3]]
    assert await batcher.submit(4) is None  # the batcher keeps working


async def test_a_cancelled_submitter_does_not_break_the_batch() -> None:
    flush = Flush()
    batcher: Batcher[int, None] = Batcher(flush)
    first, second, third = await _started(batcher.submit(1), batcher.submit(2), batcher.submit(3))
    second.cancel()
    flush.gate.set()
    assert await first is None
    assert await third is None
    assert second.cancelled()
    assert flush.batches == [[1], [2, 3]]


async def test_cancelling_the_drainer_cancels_its_batch() -> None:
    flush = Flush()
    batcher: Batcher[int, None] = Batcher(flush)
    (submitter,) = await _started(batcher.submit(1))
    await asyncio.sleep(0)  # the drainer is now inside flush
    assert flush.batches == [[1]]
    assert batcher._drainer is not None
    batcher._drainer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submitter
    assert len(batcher) == 0  # not stuck "running": the next item starts a new drainer
    flush.gate.set()
    assert await batcher.submit(2) is None


async def test_wrong_number_of_outcomes_fails_the_batch() -> None:
    calls: list[list[int]] = []

    async def short(items: Sequence[int]) -> list[None]:
        calls.append(list(items))
        return [] if len(calls) == 1 else [None] * len(items)

    batcher: Batcher[int, None] = Batcher(short)
    with pytest.raises(BrokerError, match="backend returned 0 outcomes for 1 items"):
        await asyncio.wait_for(batcher.submit(1), 1.0)  # an error, never a hang
    assert await asyncio.wait_for(batcher.submit(2), 1.0) is None


class RecordingBroker(MemoryBroker):
    """A real memory broker that counts connects and closes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.connects = 0
        self.closes = 0

    async def connect(self) -> None:
        await asyncio.sleep(0.01)  # let concurrent connects overlap
        self.connects += 1

    async def aclose(self) -> None:
        self.closes += 1


class NoResults:
    """A broker-ish object that keeps no results."""


def no_results_factory(url: str) -> NoResults:
    """Factory for ``noresults://``."""
    return NoResults()


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``rec://`` for brokers and result stores, privately to the test."""
    monkeypatch.setattr(_discovery, "_REGISTERED", dict(_discovery._REGISTERED))
    register("rec", f"{__name__}:RecordingBroker")
    register("rec", f"{__name__}:RecordingBroker", group=RESULT_STORE_GROUP)
    register("noresults", f"{__name__}:no_results_factory")


@pytest.mark.usefixtures("rec")
async def test_broker_that_is_its_own_store_connects_once() -> None:
    client = Factories("rec://one", "rec://one").build()
    assert client.same
    broker = client.broker
    assert isinstance(broker, RecordingBroker)
    await asyncio.gather(client.connect(), client.connect(), client.connect())
    await client.connect()
    assert broker.connects == 1
    await client.aclose()
    assert broker.closes == 1


@pytest.mark.usefixtures("rec")
async def test_separate_result_store_is_connected_and_closed_too() -> None:
    client = Factories("rec://broker", "rec://store").build()
    broker, store = client.broker, client.store
    assert isinstance(broker, RecordingBroker)
    assert isinstance(store, RecordingBroker)
    assert not client.same
    await client.connect()
    assert (broker.connects, store.connects) == (1, 1)
    await client.aclose()
    assert (broker.closes, store.closes) == (1, 1)


class FailingClose(RecordingBroker):
    """A broker whose close fails."""

    async def aclose(self) -> None:
        await super().aclose()
        raise ConnectionError("close failed")


@pytest.mark.usefixtures("rec")
async def test_store_is_closed_even_when_the_broker_close_fails() -> None:
    register("failclose", f"{__name__}:FailingClose")
    client = Factories("failclose://b", "rec://store").build()
    await client.connect()
    with pytest.raises(ConnectionError):
        await client.aclose()
    store = client.store
    assert isinstance(store, RecordingBroker)
    assert store.closes == 1


@pytest.mark.usefixtures("rec")
def test_broker_without_results_needs_a_results_url() -> None:
    factories = Factories("noresults://user:s3cret@h", None)
    with pytest.raises(ConfigurationError) as info:
        factories.build()
    message = str(info.value)
    assert message == "noresults://user:***@h keeps no results; pass results=<URL>"


async def test_put_result_reaches_the_store() -> None:
    url = f"memory://client-{uuid.uuid4().hex}"
    client = await Factories(url, None).build().connect()
    record = ResultRecord(s="complete", v=3, fn="mod.f")
    await asyncio.gather(
        client.put_result("j1", "q", record, 60.0), client.put_result("j2", "q", record, 60.0)
    )
    for job_id in ("j1", "j2"):
        data = await client.store.get_result(job_id, queue="q", wait=0.0)
        assert data is not None
        assert ResultRecord.model_validate_json(data) == record
    await client.aclose()


class StatelessStore:
    """A result store that keeps no shared state (no `StateStore` calls)."""

    async def put_results(self, writes: Sequence[Any]) -> None:
        """Accept and drop results (the test never writes any)."""


def stateless_store_factory(url: str) -> StatelessStore:
    """Factory for ``stateless://`` result stores."""
    return StatelessStore()


@pytest.mark.usefixtures("rec")
def test_state_is_the_broker_when_it_keeps_state() -> None:
    factories = Factories("rec://both", "rec://store")
    client = factories.build()
    factories.require_state("cron")
    broker: object = client.broker  # one object is both a Broker and a StateStore
    assert client.state is broker
    assert client.require_state("cron") is broker


@pytest.mark.usefixtures("rec")
def test_state_comes_from_the_result_store_when_the_broker_keeps_none() -> None:
    factories = Factories("noresults://b", "rec://store")
    client = factories.build()
    factories.require_state("rate_limit=")
    store: object = client.store  # one object is both a ResultStore and a StateStore
    assert client.state is store
    assert isinstance(client.store, RecordingBroker)


@pytest.mark.usefixtures("rec")
def test_no_state_anywhere_is_a_configuration_error_naming_results() -> None:
    register("stateless", f"{__name__}:stateless_store_factory", group=RESULT_STORE_GROUP)
    factories = Factories("noresults://user:s3cret@h", "stateless://u:pw@s")
    expected = (
        "rate_limit= needs shared state: noresults://user:***@h with results=stateless://u:***@s "
        "keeps none; pass results='redis://...' or 'postgresql://...' (or set UPNEXT_RESULTS_URL)"
    )
    with pytest.raises(ConfigurationError) as at_config:
        factories.require_state("rate_limit=")
    assert str(at_config.value) == expected
    client = factories.build()
    assert client.state is None
    with pytest.raises(ConfigurationError) as at_use:
        client.require_state("rate_limit=")
    assert str(at_use.value) == expected


async def test_a_chosen_job_id_is_claimed_by_core_not_left_to_the_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker without dedupes_on_enqueue: a repeated id enqueues nothing and warns nothing."""
    url = f"memory://ids-{uuid.uuid4().hex}"
    worker = upnext.Worker("ids", broker=url)

    @worker.task
    async def noop() -> None: ...

    try:
        client = await worker.client()
        caps = client.broker.capabilities
        client.broker.capabilities = replace(caps, dedupes_on_enqueue=False)
        enqueued: list[int] = []
        enqueue_many = client.broker.enqueue_many

        async def counting(envelopes: Any) -> None:
            enqueued.append(len(envelopes))
            await enqueue_many(envelopes)

        client.broker.enqueue_many = counting  # type: ignore[method-assign]  # counts the calls
        with caplog.at_level(logging.WARNING, logger="upnext"):
            futures = [await noop.options(job_id="same").submit() for _ in range(3)]
        assert [f.duplicate for f in futures] == [False, True, True]
        assert enqueued == [1], "only the first submit of an id reaches the broker"
        assert not [r for r in caplog.records if "deduplicate" in r.getMessage()]
    finally:
        await worker.aclose()
