"""Settle isolation at the broker: a batch the broker refuses has changed nothing.

Without `atomic_settles` a refused batch may have applied some items (each
written, then removed); settled again, those report LeaseLost and the rest settle.
"""

from __future__ import annotations

import pytest

from upnext.broker.protocol import Ack, Broker, Delivery, ResultWrite, SettleItem
from upnext.errors import BrokerError, LeaseLost
from upnext.testing._support import (
    Timing,
    make_envelope,
    own_result_store,
    receive_exactly,
    violated,
)

__all__ = ["SettleIsolationConformance"]

OUT_OF_RANGE_TTL = 1e300  # seconds: no backend stores an expiry this far out


class SettleIsolationConformance:
    """A settle is applied entirely or not at all, so core can isolate a bad item."""

    @pytest.mark.asyncio
    async def test_a_refused_settle_changes_nothing(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """An item with an out-of-range TTL: the batch applies in full, or raises doing nothing.

        Without `atomic_settles`, a batch that raises may have applied some of
        its items: settled again, each reports None or LeaseLost (done before).
        """
        store = own_result_store(broker)
        await broker.enqueue_many([make_envelope(upnext_queue) for _ in range(3)])
        held = await receive_exactly(broker, [upnext_queue], 3, within=timing.tolerance(2.0))
        reply_to = store.reply_address()

        def ack(delivery: Delivery, ttl: float) -> Ack:
            return _ack(delivery, upnext_queue, ttl, reply_to)

        batch: list[SettleItem] = [
            ack(d, OUT_OF_RANGE_TTL if i == 1 else 60.0) for i, d in enumerate(held)
        ]
        try:
            outcomes = await broker.settle(batch)
        except BrokerError:  # refused: then nothing may have changed
            outcomes = await broker.settle([ack(d, 60.0) for d in held])
            if not broker.capabilities.atomic_settles:
                outcomes = [None if isinstance(o, LeaseLost) else o for o in outcomes]
            assert outcomes == [None] * 3, violated(
                "a settle batch that raises must have changed nothing (every job still held)"
            )
        assert outcomes == [None] * 3, violated(
            "every item of a batch with live leases must settle"
        )
        for delivery in held:
            data = await store.get_result(
                delivery.envelope.id, queue=upnext_queue, wait=timing.delay(2.0)
            )
            assert data == f"res-{delivery.envelope.id}".encode(), violated(
                "a settled Ack's result is stored (the settle applied in full)"
            )


def _ack(delivery: Delivery, queue: str, ttl: float, reply_to: str | None) -> Ack:
    """An Ack whose result (b"res-<job id>") is kept `ttl` seconds."""
    data = f"res-{delivery.envelope.id}".encode()
    return Ack(delivery, ResultWrite(delivery.envelope.id, queue, data, ttl, reply_to))
