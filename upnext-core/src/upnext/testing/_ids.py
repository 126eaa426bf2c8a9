"""Known-id tests, mixed into `BrokerConformance`: a repeated job id never disturbs a job.

An enqueue whose id names a job of the same queue that is queued, scheduled
or held (not yet settled) changes nothing: not its body, not its due time,
not its lease, and it leaves no second copy. What happens to an id whose job
was already settled is outside this guarantee. Backends that cannot see the
ids they hold (RabbitMQ) declare ``dedupes_on_enqueue=False`` and skip.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from upnext.broker.protocol import Ack, Broker, Release
from upnext.testing._support import (
    Timing,
    ack_all,
    make_envelope,
    quantized,
    receive,
    receive_exactly,
    require,
    violated,
)

__all__ = ["KnownIdConformance"]


class KnownIdConformance:
    """A known job id never disturbs a job (capability `dedupes_on_enqueue`)."""

    @pytest.mark.asyncio
    async def test_known_id_never_disturbs_a_queued_job(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A queued job's id enqueued again (later, or twice in one batch) changes nothing."""
        require(broker, "dedupes_on_enqueue")
        first = make_envelope(upnext_queue)
        again = replace(first, body=b"second")
        await broker.enqueue_many([first, again])
        await broker.enqueue_many([again])
        [got] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        more = await receive(broker, [upnext_queue], wait=timing.delay(0.3))
        await ack_all(broker, [got, *more])
        assert got.envelope.body == first.body, violated(
            "an enqueue with a queued job's id must not change its body"
        )
        assert more == [], violated("an enqueue with a queued job's id must not add a second copy")
        after = await receive(broker, [upnext_queue], wait=timing.delay(0.3))
        await ack_all(broker, after)
        assert after == [], violated("a repeated id must leave nothing behind once its job is done")

    @pytest.mark.asyncio
    async def test_known_id_never_disturbs_a_scheduled_job(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A scheduled job's id enqueued again, due at once, keeps its due time and body."""
        require(broker, "dedupes_on_enqueue")
        delay = timing.delay(0.8)
        first = make_envelope(upnext_queue, delay=delay)
        await broker.enqueue_many([first])
        await broker.enqueue_many([replace(first, body=b"second", delay=0.0)])
        early = await receive(broker, [upnext_queue], wait=delay / 2)
        await ack_all(broker, early)
        assert early == [], violated("an enqueue with a scheduled job's id must keep its due time")
        within = quantized(broker, delay) + timing.tolerance(2.0)
        got = await receive_exactly(broker, [upnext_queue], 1, within=within)
        more = await receive(broker, [upnext_queue], wait=timing.delay(0.3))
        await ack_all(broker, got + more)
        assert got[0].envelope.body == first.body, violated(
            "an enqueue with a scheduled job's id must not change its body"
        )
        assert more == [], violated("an enqueue with a scheduled job's id must not add a copy")

    @pytest.mark.asyncio
    async def test_known_id_never_disturbs_a_held_job(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A held job's id enqueued again is not handed out, and the holder keeps it intact."""
        require(broker, "dedupes_on_enqueue")
        first = make_envelope(upnext_queue)
        await broker.enqueue_many([first])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        await broker.enqueue_many([replace(first, body=b"second")])
        other = await receive(broker, [upnext_queue], wait=timing.delay(0.5))
        await ack_all(broker, other)
        assert other == [], violated("an enqueue with a held job's id must not hand it out again")
        assert await broker.settle([Release(held)]) == [None], violated(
            "an enqueue with a held job's id must leave the lease with its holder"
        )
        [back] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        assert await broker.settle([Ack(back)]) == [None]
        assert back.envelope.body == first.body, violated(
            "an enqueue with a held job's id must not change its body"
        )
        if broker.capabilities.counts_deliveries:
            assert back.deliveries == 1, violated(
                "an enqueue with a held job's id must not reset its hand-out count"
            )
        after = await receive(broker, [upnext_queue], wait=timing.delay(0.3))
        await ack_all(broker, after)
        assert after == [], violated("an enqueue with a held job's id must not add a copy")
