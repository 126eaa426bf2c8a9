"""`_receiving`: core never cancels a backend's receive, and gives back what a stop got."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import cast

import pytest
import upnext
from upnext import _receiving
from upnext._receiving import RECEIVE_SLICE, receive_sliced
from upnext.broker import register
from upnext.broker.memory import MemoryBroker
from upnext.broker.optional import WakeableReceive
from upnext.broker.protocol import Delivery, Envelope
from upnext.errors import BrokerError
from upnext.testing._receiving import StoppableReceiver

pytestmark = pytest.mark.asyncio


class PlainBroker(MemoryBroker):
    """A receive with no cancellation handling: it takes, then needs a moment to return.

    Cancelled in that moment it would strand what it took until the lease
    ran out. It records every call's `wait` and whether any was cancelled.
    """

    lag = 0.1
    instances: list[PlainBroker] = []  # noqa: RUF012  # the test reads the worker's broker

    def __init__(self, url: str = "memory://") -> None:
        super().__init__(url)
        self.waits: list[float] = []
        self.cancelled = 0
        PlainBroker.instances.append(self)

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        self.waits.append(wait)
        try:
            got = await super().receive(queues, limit=limit, lease=lease, wait=wait)
            await asyncio.sleep(self.lag)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return got


class UnwakeableBroker(PlainBroker):
    """A PlainBroker that does not implement `WakeableReceive`: a stop by the flag alone."""

    wake_receivers = None  # type: ignore[assignment]  # None opts out of a runtime protocol


def plain_broker(url: str) -> PlainBroker:
    """The factory registered for the ``plain://`` scheme."""
    return PlainBroker(f"memory://{uuid.uuid4().hex}")


async def test_a_stop_while_a_job_is_taken_gives_it_back_uncounted() -> None:
    """Stopped after the take, the call returns and the job is released, uncounted."""
    broker = PlainBroker()
    await broker.enqueue_many([Envelope("j", "q", b"x")])
    receiver = StoppableReceiver(broker, "q", wait=5.0)
    await asyncio.sleep(broker.lag / 2)  # taken, not yet returned
    assert await receiver.stop() == []
    assert broker.cancelled == 0
    broker.lag = 0.0
    [again] = await broker.receive(["q"], limit=1, lease=30.0, wait=0.0)
    assert (again.envelope.id, again.redelivered, again.deliveries) == ("j", False, 1)


async def test_a_stop_on_an_idle_queue_ends_within_a_slice() -> None:
    """A receiver blocked on an empty queue (wait 30 s) ends within one slice of its stop."""
    broker = UnwakeableBroker()
    assert not isinstance(cast(object, broker), WakeableReceive)
    broker.lag = 0.0
    receiver = StoppableReceiver(broker, "q", wait=30.0)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert await receiver.stop() == []
    assert time.monotonic() - started < RECEIVE_SLICE + 0.15
    assert broker.cancelled == 0


async def test_a_stop_wakes_a_wakeable_broker_s_receive_at_once() -> None:
    """With `WakeableReceive`, a receiver blocked on an empty queue ends well within a slice."""
    broker = PlainBroker()
    assert isinstance(broker, WakeableReceive)
    broker.lag = 0.0
    receiver = StoppableReceiver(broker, "q", wait=30.0)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert await receiver.stop() == []
    assert time.monotonic() - started < RECEIVE_SLICE / 2
    assert broker.cancelled == 0


async def test_the_wait_is_spent_in_short_calls() -> None:
    """A 1 s wait on an idle queue is several calls of at most RECEIVE_SLICE s, ending on time."""
    broker = PlainBroker()
    broker.lag = 0.0
    started = time.monotonic()
    assert (
        await receive_sliced(broker, ["q"], limit=1, lease=30.0, wait=1.0, stopped=asyncio.Event())
        == []
    )
    took = time.monotonic() - started
    assert 1.0 <= took < 1.3, took
    assert len(broker.waits) >= 4
    assert max(broker.waits) <= RECEIVE_SLICE


async def test_a_zero_wait_is_one_call() -> None:
    """wait=0 looks once and returns."""
    broker = PlainBroker()
    assert (
        await receive_sliced(broker, ["q"], limit=1, lease=30.0, wait=0.0, stopped=asyncio.Event())
        == []
    )
    assert broker.waits == [0.0]


async def test_receive_errors_propagate() -> None:
    """A failing receive raises its own error, unchanged."""

    class Failing(MemoryBroker):
        async def receive(
            self, queues: Sequence[str], *, limit: int, lease: float, wait: float
        ) -> list[Delivery]:
            raise BrokerError("refused")

    with pytest.raises(BrokerError, match="refused"):
        await receive_sliced(
            Failing(), ["q"], limit=1, lease=30.0, wait=1.0, stopped=asyncio.Event()
        )


async def test_a_call_stuck_past_its_wait_is_cancelled_at_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A receive ignoring its wait is cancelled OVERRUN_LIMIT s past a stop, not awaited."""
    monkeypatch.setattr(_receiving, "OVERRUN_LIMIT", 0.2)
    broker = PlainBroker()
    broker.lag = 60.0
    await broker.enqueue_many([Envelope("j", "q", b"x")])
    receiver = StoppableReceiver(broker, "q", wait=0.0)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await receiver.stop() == []
    assert time.monotonic() - started < RECEIVE_SLICE + 0.2 + 0.2
    assert broker.cancelled == 1


async def test_a_stopping_worker_never_cancels_its_receive() -> None:
    """Leaving `async with worker:` (receive_wait=30) is prompt and cancels no receive."""
    register("plain", f"{__name__}:plain_broker")
    PlainBroker.instances.clear()
    worker = upnext.Worker("w", "plain://", receive_wait=30.0, load_plugins=False)
    async with worker:
        await asyncio.sleep(0.3)
        leaving = time.monotonic()
    took = time.monotonic() - leaving
    assert took < 0.5, took
    [receiver] = [broker for broker in PlainBroker.instances if broker.waits]
    assert receiver.cancelled == 0
