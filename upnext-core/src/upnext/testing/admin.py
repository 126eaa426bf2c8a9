"""`QueueAdminConformance`: queues(), stats() and purge().

A count may be None only where the backend cannot tell; when it gives a
number, the number must be exact, or (without `exact_stats`) become exact
within a few seconds of the queue falling still.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

import pytest

from upnext.broker.protocol import Ack, Broker, DeadLetter, QueueAdmin, QueueStats
from upnext.testing._support import (
    Timing,
    make_envelope,
    make_record,
    receive,
    receive_exactly,
    violated,
)

__all__ = ["QueueAdminConformance"]

# Long enough that the scheduled job cannot fall due during a test.
_FAR = 600.0


def _admin(broker: Broker) -> QueueAdmin:
    assert isinstance(broker, QueueAdmin), violated(
        f"{type(broker).__name__} must implement QueueAdmin to run QueueAdminConformance"
    )
    return broker


_SETTLING = 5.0  # seconds estimated stats may take to agree with a still queue


def _exact_or_none(name: str, value: int | None, wanted: int) -> None:
    assert value is None or value == wanted, violated(
        f"stats().{name} must be exact or None: got {value}, expected {wanted}"
    )


async def _stats(broker: Broker, queue: str, timing: Timing, **wanted: int) -> QueueStats:
    """`stats(queue)`; without `exact_stats`, read again until the `wanted` counts agree."""
    admin = _admin(broker)
    stats = await admin.stats(queue)
    if broker.capabilities.exact_stats:
        return stats
    deadline = time.monotonic() + timing.tolerance(_SETTLING)
    while time.monotonic() < deadline and any(
        asdict(stats)[name] not in (None, value) for name, value in wanted.items()
    ):
        await asyncio.sleep(0.1)
        stats = await admin.stats(queue)
    return stats


class QueueAdminConformance:
    """The `upnext.broker.QueueAdmin` contract."""

    @pytest.mark.asyncio
    async def test_queues_lists_a_used_queue(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """queues() names a queue once a job was enqueued to it."""
        admin = _admin(broker)
        await broker.enqueue_many([make_envelope(upnext_queue)])
        assert upnext_queue in await admin.queues(), violated("queues() must list a used queue")
        await admin.purge(upnext_queue)

    @pytest.mark.asyncio
    async def test_stats_counts_each_state(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """stats() counts ready, scheduled, in-flight and dead jobs, exactly or None.

        Without `exact_stats` the counts must agree within a few seconds.
        """
        admin = _admin(broker)
        ready = [make_envelope(upnext_queue) for _ in range(3)]
        await broker.enqueue_many([*ready, make_envelope(upnext_queue, delay=_FAR)])
        held, dead = await receive_exactly(broker, [upnext_queue], 2, within=timing.delay(2.0))
        record = make_record(upnext_queue, failed_at=time.time(), job_id=dead.envelope.id)
        assert await broker.settle([DeadLetter(dead, record)]) == [None]
        stats = await _stats(
            broker, upnext_queue, timing, ready=1, scheduled=1, in_flight=1, dead=1
        )
        _exact_or_none("ready", stats.ready, 1)
        _exact_or_none("scheduled", stats.scheduled, 1)
        _exact_or_none("in_flight", stats.in_flight, 1)
        _exact_or_none("dead", stats.dead, 1)
        await broker.settle([Ack(held)])
        await admin.purge(upnext_queue)

    @pytest.mark.asyncio
    async def test_purge_drops_ready_and_scheduled_jobs(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """purge() drops ready and scheduled jobs, returns how many, and spares held ones."""
        admin = _admin(broker)
        await broker.enqueue_many([make_envelope(upnext_queue) for _ in range(3)])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(2.0))
        await broker.enqueue_many([make_envelope(upnext_queue, delay=timing.delay(0.3))])
        assert await admin.purge(upnext_queue) == 3, violated(
            "purge() must return how many ready and scheduled jobs it dropped"
        )
        got = await receive(broker, [upnext_queue], wait=timing.delay(0.3) + timing.tolerance(0.5))
        assert got == [], violated("a purged job must never be handed out")
        stats = await _stats(broker, upnext_queue, timing, ready=0, scheduled=0)
        _exact_or_none("ready", stats.ready, 0)
        _exact_or_none("scheduled", stats.scheduled, 0)
        assert await broker.settle([Ack(held)]) == [None], violated(
            "purge() must leave held jobs to their holder"
        )
