"""`ReceiveStopConformance`: core stops a receive on this backend without losing a job.

Core never cancels a backend's `receive`: it receives through
`upnext._receiving.receive_shielded`, which asks in short calls and, when
its caller is cancelled, lets the call in flight return and releases what it
handed out. These tests run that helper over the backend under test, so
they hold for a plain `receive` with no cancellation handling of its own.
Mixed into `BrokerConformance`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from upnext._receiving import receive_shielded
from upnext.broker.protocol import Broker, Delivery
from upnext.testing._support import (
    Timing,
    ack_all,
    make_envelope,
    receive_exactly,
    violated,
)

__all__ = ["ReceiveStopConformance"]


class ReceiveStopConformance:
    """A receive core stops hands out nothing and ends promptly."""

    @pytest.mark.asyncio
    async def test_stopped_receive_loses_and_counts_nothing(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A receive core stops at any moment hands out nothing: the job comes back uncounted."""
        for round_number in range(20):
            envelope = make_envelope(upnext_queue)
            call = asyncio.ensure_future(
                receive_shielded(broker, [upnext_queue], limit=1, lease=30.0, wait=2.0)
            )
            if round_number % 2:  # stop while blocked, or racing the hand-out
                await broker.enqueue_many([envelope])
                await asyncio.sleep(0.001 * (round_number % 4))
            else:
                await asyncio.sleep(0.01)
                await broker.enqueue_many([envelope])
            call.cancel()
            taken = await _taken_by(call)
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
        call = asyncio.ensure_future(
            receive_shielded(broker, [upnext_queue], limit=1, lease=30.0, wait=10.0)
        )
        await asyncio.sleep(0.1)
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        took = time.monotonic() - started
        assert took < timing.tolerance(0.5), violated(
            f"a stopped receive must end at once (took {took:.2f} s of a 10 s wait)"
        )


async def _taken_by(call: asyncio.Future[list[Delivery]]) -> list[Delivery]:
    try:
        return await call
    except asyncio.CancelledError:
        return []
