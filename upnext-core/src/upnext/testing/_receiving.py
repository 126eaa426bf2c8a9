"""`ReceiveStopConformance`: core stops a receive on this backend without losing a job.

Core never cancels a backend's `receive`: a worker receives in short calls
(`upnext._receiving.receive_sliced`) from a task it ends with a flag, lets the
call in flight return and releases what a stopped call handed out. These
tests run that loop over the backend under test, so they hold for a plain
`receive` with no cancellation handling of its own (and, for a broker that
implements `WakeableReceive`, with the wake core sends as it stops).
Mixed into `BrokerConformance`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from upnext._receiving import give_back, receive_sliced, stop_receiver
from upnext.broker.optional import WakeableReceive
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

    @pytest.mark.asyncio
    async def test_wake_receivers_ends_a_waiting_receive_and_only_that(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """`WakeableReceive`: a waiting receive returns soon, and the next one waits again."""
        if not isinstance(broker, WakeableReceive):
            pytest.skip(f"{type(broker).__name__} does not implement WakeableReceive")
        await broker.wake_receivers()  # with nothing waiting: no effect on what follows
        receive = asyncio.ensure_future(
            broker.receive([upnext_queue], limit=1, lease=30.0, wait=timing.delay(10.0))
        )
        await asyncio.sleep(timing.delay(0.2))
        assert not receive.done(), violated("receive waits on an empty queue")
        started = time.monotonic()
        await broker.wake_receivers()
        got = await asyncio.wait_for(receive, timing.tolerance(2.0))
        took = time.monotonic() - started
        assert got == [], violated("a woken receive on an empty queue hands out nothing")
        assert took < timing.tolerance(0.2), violated(
            f"a woken receive returns within a round trip (took {took:.2f} s of a 10 s wait)"
        )
        started = time.monotonic()
        got = await broker.receive([upnext_queue], limit=1, lease=30.0, wait=timing.delay(0.4))
        took = time.monotonic() - started
        assert got == [], violated("a receive on an empty queue hands out nothing")
        assert took >= timing.delay(0.35), violated(
            f"a receive that starts after a wake waits as asked (returned after {took:.2f} s)"
        )
        envelope = make_envelope(upnext_queue)
        await broker.enqueue_many([envelope])
        [job] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.tolerance(2.0), what="a job after a wake"
        )
        assert job.envelope.id == envelope.id
        assert not job.redelivered, violated("a job received after a wake is a first delivery")
        await ack_all(broker, [job])


class StoppableReceiver:
    """A receive loop as a worker's: sliced calls, ended by a flag, a stopped take given back."""

    def __init__(self, broker: Broker, queue: str, *, wait: float) -> None:
        self.broker = broker
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
        await stop_receiver(self.task, self.stopped, self.broker)
        return self.got
