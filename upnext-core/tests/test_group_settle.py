"""The worker's group-commit settle isolates an item the broker refuses."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import pytest
from upnext import TaskExecutionError, Worker, _discovery
from upnext._discovery import register
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Ack, SettleItem, SettleOutcome
from upnext.errors import BrokerError, BrokerUnavailable


class Refusing(MemoryBroker):
    """Refuses, changing nothing, any settle batch with a result holding b"poison"."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[int] = []  # the size of each settle batch
        self.outages = 0  # settles to fail as unreachable first
        self.read_only_for = 0.0  # seconds from the first settle during which all are refused
        self.read_only_until: float | None = None

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        self.calls.append(len(items))
        if self.outages:
            self.outages -= 1
            raise BrokerUnavailable("down for a moment")
        if self.read_only_until is None:
            self.read_only_until = time.monotonic() + self.read_only_for
        if time.monotonic() < self.read_only_until:
            raise BrokerError("read-only transaction")
        for item in items:
            if isinstance(item, Ack) and item.result and b"poison" in item.result.data:
                raise BrokerError("value out of range")
        return await super().settle(items)


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``refusing://`` privately to the test."""
    monkeypatch.setattr(_discovery, "_REGISTERED", dict(_discovery._REGISTERED))
    register("refusing", f"{__name__}:Refusing")


def _echo_worker(runs: Counter[str]) -> Worker:
    worker = Worker("q", "refusing://one", concurrency=30, load_plugins=False)

    @worker.task(name="echo")
    async def echo(word: str) -> str:
        runs[word] += 1
        return word

    return worker


@pytest.mark.usefixtures("refusing")
async def test_a_refused_item_is_dead_lettered_alone_and_the_rest_settle_once() -> None:
    runs: Counter[str] = Counter()
    worker = _echo_worker(runs)
    words = [f"w{i}" for i in range(30)]
    words.insert(15, "poison")
    futures = await worker.tasks["echo"].submit_many([{"word": w} for w in words])
    async with worker:
        for word, future in zip(words, futures, strict=True):
            if word == "poison":
                with pytest.raises(TaskExecutionError, match="value out of range"):
                    await future.result(5.0)
            else:
                assert await future.value(5.0) == word
        await worker.join(timeout=5.0)
        page = await worker.dlq.list(queue="q")
    assert runs == Counter(words)  # each ran once: nothing handed back, nothing repeated
    assert [(e.job_id, e.reason) for e in page.items] == [(futures[15].job_id, "settle refused")]


@pytest.mark.usefixtures("refusing")
async def test_an_unreachable_broker_is_retried_whole_not_split() -> None:
    runs: Counter[str] = Counter()
    worker = _echo_worker(runs)
    futures = await worker.tasks["echo"].submit_many([{"word": f"w{i}"} for i in range(20)])
    broker = (await worker.client()).broker
    assert isinstance(broker, Refusing)
    broker.outages = 2
    async with worker:
        assert [await f.value(5.0) for f in futures] == [f"w{i}" for i in range(20)]
    assert broker.calls[0] == broker.calls[1] == broker.calls[2]  # the same batch, again
    assert sum(broker.calls[2:]) == 20  # each job settled once, none split off or dropped


@pytest.mark.usefixtures("refusing")
async def test_a_broker_refusing_everything_blames_no_job() -> None:
    """Nothing accepted, not even a dead-letter: the batch waits and is retried whole."""
    runs: Counter[str] = Counter()
    worker = _echo_worker(runs)
    futures = await worker.tasks["echo"].submit_many([{"word": f"w{i}"} for i in range(20)])
    broker = (await worker.client()).broker
    assert isinstance(broker, Refusing)
    broker.read_only_for = 0.5
    async with worker:
        assert [await f.value(5.0) for f in futures] == [f"w{i}" for i in range(20)]
        page = await worker.dlq.list(queue="q")
    assert page.items == []  # no job dead-lettered or released for the broker's fault
    assert runs == Counter(f"w{i}" for i in range(20))
