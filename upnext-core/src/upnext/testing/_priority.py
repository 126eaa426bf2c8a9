"""Priority tests, mixed into `BrokerConformance`: `Envelope.priority` travels with its job.

A backend declaring `priority_levels` > 1 keeps each job's priority from
enqueue to every delivery: after a `Retry` (delayed or not), a `Release`, a
redelivery (an expired lease, or a closed connection where leases are not
timed) and a dead-letter replay. Ordering by priority is not tested here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from upnext.broker.protocol import MAX_PRIORITY, Broker, Delivery, Release, Retry, SettleItem
from upnext.testing._support import (
    Timing,
    ack_all,
    dead_letter,
    make_envelope,
    make_record,
    receive_exactly,
    require_dlq,
    violated,
)

__all__ = ["PriorityConformance"]


def require_priorities(broker: Broker) -> None:
    """Skip unless the broker declares that priorities travel (`priority_levels` > 1)."""
    levels = broker.capabilities.priority_levels
    if levels <= 1:
        pytest.skip(
            f"needs capability priority_levels > 1; {type(broker).__name__} declares {levels}"
        )


def _priorities(deliveries: list[Delivery]) -> dict[str, int]:
    return {d.envelope.id: d.envelope.priority for d in deliveries}


class PriorityConformance:
    """`Envelope.priority` round-trips through every path a job can take."""

    def test_priority_levels_are_in_range(self, broker: Broker) -> None:
        """A backend declares from 1 (no priorities) to MAX_PRIORITY + 1 levels."""
        levels = broker.capabilities.priority_levels
        assert 1 <= levels <= MAX_PRIORITY + 1, violated(
            f"priority_levels must be from 1 to {MAX_PRIORITY + 1}, got {levels}"
        )

    @pytest.mark.asyncio
    async def test_priority_travels_to_the_receiver(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Every priority from 0 to MAX_PRIORITY comes back as enqueued, delayed jobs too."""
        require_priorities(broker)
        envelopes = [make_envelope(upnext_queue, priority=p) for p in range(MAX_PRIORITY + 1)]
        envelopes.append(make_envelope(upnext_queue, delay=timing.delay(0.2), priority=4))
        await broker.enqueue_many(envelopes)
        got = await receive_exactly(
            broker, [upnext_queue], len(envelopes), within=timing.tolerance(3.0)
        )
        assert _priorities(got) == {e.id: e.priority for e in envelopes}, violated(
            "a delivery must carry the priority its job was enqueued with"
        )
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_priority_survives_retry_and_release(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A job keeps its priority through Release, Retry, and a delayed Retry."""
        require_priorities(broker)
        envelope = make_envelope(upnext_queue, priority=7)
        await broker.enqueue_many([envelope])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        steps: list[tuple[str, Callable[[Delivery], SettleItem]]] = [
            ("Release", Release),
            ("Retry", lambda d: Retry(d, b"retried", 0.0)),
            ("a delayed Retry", lambda d: Retry(d, b"later", timing.delay(0.2))),
        ]
        for name, settle_as in steps:
            outcome = await broker.settle([settle_as(held)])
            assert outcome == [None], violated(f"{name} of a live job must succeed, got {outcome}")
            [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(3.0))
            assert held.envelope.priority == 7, violated(
                f"a job must keep its priority through {name} (got {held.envelope.priority})"
            )
        await ack_all(broker, [held])

    @pytest.mark.asyncio
    async def test_priority_survives_redelivery(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A job handed out again after its lease ran out (or its connection closed) keeps it."""
        require_priorities(broker)
        envelope = make_envelope(upnext_queue, priority=5)
        await broker.enqueue_many([envelope])
        lease = timing.delay(0.3)
        await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0), lease=lease)
        if not broker.capabilities.timed_leases:
            # Without timed leases a job comes back when its receiver's connection closes.
            await broker.aclose()
            await broker.connect()
        [again] = await receive_exactly(
            broker, [upnext_queue], 1, within=lease + timing.tolerance(5.0)
        )
        assert again.redelivered, violated("a redelivery must have redelivered=True")
        assert again.envelope.priority == 5, violated(
            f"a redelivered job must keep its priority (got {again.envelope.priority})"
        )
        await ack_all(broker, [again])

    @pytest.mark.asyncio
    async def test_priority_survives_dlq_replay(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """dlq_replay enqueues the envelope with the priority it is given."""
        require_priorities(broker)
        admin = require_dlq(broker)
        record = make_record(upnext_queue, failed_at=time.time())
        await dead_letter(broker, [record])
        envelope = make_envelope(upnext_queue, priority=8)
        await admin.dlq_replay(record.id, envelope)
        [got] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        assert (got.envelope.id, got.envelope.priority) == (envelope.id, 8), violated(
            "a replayed job must carry the priority of the envelope given to dlq_replay"
        )
        await ack_all(broker, [got])
