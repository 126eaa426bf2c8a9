"""`ReceiveStopConformance`: core stops a receive on this backend without losing a job.

Core never cancels a backend's `receive`: a worker receives in short calls
(`upnext._receiving.receive_sliced`) from a task it ends with a flag, lets the
call in flight return and releases what a stopped call handed out. These
tests run that loop over the backend under test, so they hold for a plain
`receive` with no cancellation handling of its own.
Mixed into `BrokerConformance`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from upnext._receiving import give_back, receive_sliced, stop_receiver
from upnext.broker.protocol import Broker, Delivery
from upnext.testing._support import (
    Timing,
    ack_all,
    make_envelope,
    receive_exactly,
    violated,
)

__all__ = ["ReceiveStopConformance", "StoppableReceiver"]


class ReceiveStopConformance:
    """A receive core stops hands out nothing and ends promptly."""

    @pytest.mark.asyncio
    async def test_stopped_receive_loses_and_counts_nothing(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A receive core stops at any moment hands out nothing: the job comes back uncounted."""
        for round_number in range(20):
            envelope = make_envelope(upnext_queue)
            receiver = StoppableReceiver(broker, upnext_queue, wait=2.0)
            if round_number % 2:  # stop while blocked, or racing the hand-out
                await broker.enqueue_many([envelope])
                await asyncio.sleep(0.001 * (round_number % 4))
            else:
                await asyncio.sleep(0.01)
                await broker.enqueue_many([envelope])
            taken = await receiver.stop()
            if taken:  # the receive finished before the cancel landed: a normal hand-out
                await ack_all(broker, taken)
                continue
            [got] = await receive_exactly(
                broker,
                [upnext_queue],
                1,
                within=timing.tolerance(2.0),
                what="a job taken by a stopped receive must come back at once",
            )
            assert got.envelope.id == envelope.id
            assert not got.redelivered, violated(
                "a job taken by a stopped receive must come back with redelivered=False"
            )
            if broker.capabilities.counts_deliveries:
                assert got.deliveries == 1, violated(
                    "a stopped receive's hand-out must not be counted"
                )
            await ack_all(broker, [got])

    @pytest.mark.asyncio
    async def test_blocked_receive_stops_promptly(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Stopping a receive blocked on an empty queue ends it at once, not after its wait."""
        receiver = StoppableReceiver(broker, upnext_queue, wait=10.0)
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await receiver.stop() == []
        took = time.monotonic() - started
        assert took < timing.tolerance(0.5), violated(
            f"a stopped receive must end at once (took {took:.2f} s of a 10 s wait)"
        )


class StoppableReceiver:
    """A receive loop as a worker's: sliced calls, ended by a flag, a stopped take given back."""

    def __init__(self, broker: Broker, queue: str, *, wait: float) -> None:
        self.stopped = asyncio.Event()
        self.got: list[Delivery] = []
        self.task = asyncio.ensure_future(self._run(broker, queue, wait))

    async def _run(self, broker: Broker, queue: str, wait: float) -> None:
        got = await receive_sliced(
            broker, [queue], limit=1, lease=30.0, wait=wait, stopped=self.stopped
        )
        if self.stopped.is_set():
            await give_back(broker.settle, got)
        else:
            self.got = got

    async def stop(self) -> list[Delivery]:
        """End the loop; what it received before the stop (a normal hand-out), if anything."""
        await stop_receiver(self.task, self.stopped)
        return self.got
