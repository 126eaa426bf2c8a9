"""`receive_shielded`: core never cancels a backend's receive, and gives back what a stop got."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import pytest
import upnext
from upnext import _receiving
from upnext._receiving import RECEIVE_SLICE, receive_shielded
from upnext.broker import register
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Delivery, Envelope
from upnext.errors import BrokerError

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


def plain_broker(url: str) -> PlainBroker:
    """The factory registered for the ``plain://`` scheme."""
    return PlainBroker(f"memory://{uuid.uuid4().hex}")


async def test_a_stop_while_a_job_is_taken_gives_it_back_uncounted() -> None:
    """Cancelled after the take, the helper waits for the call and releases the job."""
    broker = PlainBroker()
    await broker.enqueue_many([Envelope("j", "q", b"x")])
    call = asyncio.ensure_future(receive_shielded(broker, ["q"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(broker.lag / 2)  # taken, not yet returned
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert broker.cancelled == 0
    broker.lag = 0.0
    [again] = await broker.receive(["q"], limit=1, lease=30.0, wait=0.0)
    assert (again.envelope.id, again.redelivered, again.deliveries) == ("j", False, 1)


async def test_a_second_cancel_still_waits_for_the_call() -> None:
    """Repeated cancellations (a loop shutting down) neither cancel the call nor lose its job."""
    broker = PlainBroker()
    await broker.enqueue_many([Envelope("j", "q", b"x")])
    call = asyncio.ensure_future(receive_shielded(broker, ["q"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(broker.lag / 4)
    call.cancel()
    await asyncio.sleep(broker.lag / 4)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert broker.cancelled == 0
    assert (await broker.stats("q")).ready == 1


async def test_the_wait_is_spent_in_short_calls() -> None:
    """A 1 s wait on an idle queue is several calls of at most RECEIVE_SLICE s, ending on time."""
    broker = PlainBroker()
    broker.lag = 0.0
    started = time.monotonic()
    assert await receive_shielded(broker, ["q"], limit=1, lease=30.0, wait=1.0) == []
    took = time.monotonic() - started
    assert 1.0 <= took < 1.3, took
    assert len(broker.waits) >= 4
    assert max(broker.waits) <= RECEIVE_SLICE


async def test_a_zero_wait_is_one_call() -> None:
    """wait=0 looks once and returns."""
    broker = PlainBroker()
    assert await receive_shielded(broker, ["q"], limit=1, lease=30.0, wait=0.0) == []
    assert broker.waits == [0.0]


async def test_receive_errors_propagate() -> None:
    """A failing receive raises its own error, unchanged."""

    class Failing(MemoryBroker):
        async def receive(
            self, queues: Sequence[str], *, limit: int, lease: float, wait: float
        ) -> list[Delivery]:
            raise BrokerError("refused")

    with pytest.raises(BrokerError, match="refused"):
        await receive_shielded(Failing(), ["q"], limit=1, lease=30.0, wait=1.0)


async def test_a_call_stuck_past_its_wait_is_cancelled_at_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A receive ignoring its wait is cancelled OVERRUN_LIMIT s past it, not awaited for ever."""
    monkeypatch.setattr(_receiving, "OVERRUN_LIMIT", 0.2)
    broker = PlainBroker()
    broker.lag = 60.0
    await broker.enqueue_many([Envelope("j", "q", b"x")])
    call = asyncio.ensure_future(receive_shielded(broker, ["q"], limit=1, lease=30.0, wait=0.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(0)
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
