"""`BrokerConformance`: enqueue, receive, waking, delays, concurrency and cancel.

Lease and settle tests live in `upnext.testing._settle`, known-id tests in
`upnext.testing._ids`, priority tests in `upnext.testing._priority`,
stopped-receive tests in `upnext.testing._receiving`; all are mixed in, so
`BrokerConformance` is the one class a backend subclasses. Every test takes
the `broker` fixture (override it) and the plugin's `upnext_queue`,
`upnext_queues` and `timing` fixtures.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable

import pytest

from upnext.broker.optional import TransactionalEnqueue
from upnext.broker.protocol import Ack, Broker, Delivery
from upnext.testing._ids import KnownIdConformance
from upnext.testing._isolation import SettleIsolationConformance
from upnext.testing._priority import PriorityConformance
from upnext.testing._receiving import ReceiveStopConformance
from upnext.testing._settle import LeaseAndSettleConformance
from upnext.testing._support import (
    Timing,
    ack_all,
    blocked_receiver,
    make_envelope,
    quantized,
    receive,
    receive_exactly,
    require,
    violated,
)

__all__ = ["BrokerConformance"]

# Blocked-receive CPU budget: a receiver that really blocks burns almost none.
_MAX_CPU_SHARE_WHILE_BLOCKED = 0.3


class BrokerConformance(
    LeaseAndSettleConformance,
    KnownIdConformance,
    SettleIsolationConformance,
    ReceiveStopConformance,
    PriorityConformance,
):
    """The `Broker` contract (`upnext.broker.protocol`), checked through the protocol alone."""

    def test_capabilities_agree_with_the_protocols(self, broker: Broker) -> None:
        """What a broker declares matches what it implements, and every value is usable."""
        caps = broker.capabilities
        assert caps.transactional_enqueue == isinstance(broker, TransactionalEnqueue), violated(
            "transactional_enqueue is declared exactly when the broker implements"
            " upnext.broker.TransactionalEnqueue"
        )
        assert 0 <= caps.delay_quantum < math.inf, violated(
            f"delay_quantum must be a finite number of seconds >= 0, got {caps.delay_quantum}"
        )
        limit = caps.delivery_limit
        assert limit is None or 0 < limit < math.inf, violated(
            f"delivery_limit must be None or a finite number of seconds > 0, got {limit}"
        )
        assert limit is not None or not caps.delivery_limit_strict, violated(
            "delivery_limit_strict needs a delivery_limit to be strict about"
        )

    @pytest.mark.asyncio
    async def test_enqueued_jobs_are_received_intact(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Every enqueued envelope is handed out once, with its id, queue and body unchanged."""
        envelopes = [make_envelope(upnext_queue) for _ in range(3)]
        await broker.enqueue_many(envelopes)
        got = await receive_exactly(broker, [upnext_queue], 3, within=timing.tolerance(2.0))
        seen = {(d.envelope.id, d.envelope.queue, d.envelope.body) for d in got}
        assert seen == {(e.id, e.queue, e.body) for e in envelopes}, violated(
            "a delivery must carry the enqueued id, queue and body"
        )
        assert not any(d.redelivered for d in got), violated(
            "a first hand-out must have redelivered=False"
        )
        if broker.capabilities.counts_deliveries:
            assert [d.deliveries for d in got] == [1, 1, 1], violated(
                "a first hand-out must have deliveries == 1"
            )
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_body_is_opaque_bytes(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A body of any bytes (NUL, non-UTF-8) of 1 MiB comes back byte for byte.

        1 MiB is core's default `max_payload`: a backend must carry a body that large.
        """
        body = bytes(range(256)) * 4096
        envelope = make_envelope(upnext_queue, body=body)
        await broker.enqueue_many([envelope])
        [got] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        assert got.envelope.body == body, violated("a body must be stored as opaque bytes")
        await ack_all(broker, [got])

    @pytest.mark.asyncio
    async def test_due_jobs_are_handed_out_roughly_fifo(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Due jobs of a queue come out roughly in enqueue order (few inversions)."""
        envelopes = [make_envelope(upnext_queue) for _ in range(10)]
        for envelope in envelopes:
            await broker.enqueue_many([envelope])
        got = await receive_exactly(broker, [upnext_queue], 10, within=timing.tolerance(2.0))
        rank = {e.id: i for i, e in enumerate(envelopes)}
        order = [rank[d.envelope.id] for d in got]
        inversions = sum(1 for i, a in enumerate(order) for b in order[i + 1 :] if a > b)
        assert inversions <= 4, violated(f"due jobs must come out roughly FIFO, got {order}")
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_immediate_job_wakes_blocked_receiver(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """An immediate job wakes a receiver blocked with a long wait at once."""
        async with blocked_receiver(broker, [upnext_queue], wait=timing.delay(10.0)) as task:
            await broker.enqueue_many([make_envelope(upnext_queue)])
            enqueued = time.monotonic()
            got, returned = await task
        assert len(got) == 1, violated("a blocked receiver must be handed the new job")
        late = returned - enqueued
        assert late <= timing.tolerance(0.3), violated(
            f"an immediate job must wake a blocked receiver at once, took {late:.3f} s"
        )
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_delayed_job_is_received_when_due(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A delayed job is never handed out early, and within 0.15 s after it falls due.

        It falls due at its delay rounded up to `delay_quantum`.
        """
        delay = timing.delay(0.6)
        async with blocked_receiver(broker, [upnext_queue], wait=timing.delay(10.0)) as task:
            before = time.monotonic()
            await broker.enqueue_many([make_envelope(upnext_queue, delay=delay)])
            after = time.monotonic()
            got, returned = await task
        assert len(got) == 1, violated("a blocked receiver must be handed the delayed job")
        assert returned - before >= delay - 0.005, violated(
            f"a delayed job must not be handed out before its delay ({returned - before:.3f} s"
            f" < {delay:.3f} s)"
        )
        late = returned - after - quantized(broker, delay)
        assert late <= timing.tolerance(0.15), violated(
            f"a blocked receiver must get a delayed job within 0.15 s of it falling due,"
            f" was {late:.3f} s late"
        )
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_receive_respects_limit(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """receive returns at most `limit` deliveries, and at least one when jobs are due."""
        await broker.enqueue_many([make_envelope(upnext_queue) for _ in range(5)])
        got: list[Delivery] = []
        deadline = time.monotonic() + timing.tolerance(3.0)
        while len(got) < 5 and time.monotonic() < deadline:
            batch = await receive(broker, [upnext_queue], wait=timing.delay(1.0), limit=2)
            assert 1 <= len(batch) <= 2, violated(
                f"receive(limit=2) with due jobs must return 1 or 2 deliveries, got {len(batch)}"
            )
            got += batch
        assert len({d.envelope.id for d in got}) == 5, violated("every job must be handed out")
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_receive_from_several_queues(
        self, broker: Broker, upnext_queues: Callable[[int], list[str]], timing: Timing
    ) -> None:
        """One receive serves several queues, and a job on any of them wakes it."""
        first, second = upnext_queues(2)
        async with blocked_receiver(broker, [first, second], wait=timing.delay(10.0)) as task:
            await broker.enqueue_many([make_envelope(second)])
            enqueued = time.monotonic()
            woke, returned = await task
        assert [d.envelope.queue for d in woke] == [second], violated(
            "a receive on several queues must be handed a job of any of them"
        )
        assert returned - enqueued <= timing.tolerance(0.3), violated(
            "a job on the second queue must wake a receiver blocked on both at once"
        )
        await broker.enqueue_many([make_envelope(first), make_envelope(second)])
        got = await receive_exactly(broker, [first, second], 2, within=timing.tolerance(2.0))
        assert sorted(d.envelope.queue for d in got) == sorted([first, second]), violated(
            "a receive on several queues must hand out the jobs of each"
        )
        await ack_all(broker, woke + got)

    @pytest.mark.asyncio
    async def test_empty_receive_blocks_for_wait_without_busy_polling(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A receive on an empty queue returns [] after about `wait` s, using little CPU."""
        wait = timing.delay(1.0)
        cpu, started = time.process_time(), time.monotonic()
        got = await receive(broker, [upnext_queue], wait=wait)
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
        assert got == [], violated("a receive on an empty queue must return []")
        assert elapsed >= wait * 0.9, violated(
            f"an empty receive must block for its wait ({elapsed:.3f} s < {wait:.3f} s)"
        )
        assert elapsed <= wait + timing.tolerance(0.5), violated(
            f"an empty receive must return soon after its wait ({elapsed:.3f} s)"
        )
        assert cpu <= _MAX_CPU_SHARE_WHILE_BLOCKED * elapsed, violated(
            f"a blocked receive must not busy-poll (used {cpu:.3f} s CPU in {elapsed:.3f} s)"
        )

    @pytest.mark.asyncio
    async def test_concurrent_receivers_never_share_a_job(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Four receivers draining 200 jobs under long leases see every job exactly once."""
        total = 200
        held = await _drain_concurrently(broker, upnext_queue, total, timing)
        try:
            seen = Counter(d.envelope.id for d in held)
            twice = [job_id for job_id, n in seen.items() if n > 1]
            assert not twice, violated(
                f"a job must never be held by two receivers at once ({len(twice)} were)"
            )
            assert len(seen) == total, violated(
                f"every job must be handed out, got {len(seen)} of {total}"
            )
        finally:
            await broker.settle([Ack(d) for d in {d.envelope.id: d for d in held}.values()])

    @pytest.mark.asyncio
    async def test_cancel_removes_queued_and_scheduled_jobs(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """cancel() of a queued or scheduled job returns True and it is never handed out."""
        require(broker, "cancel_queued")
        delay = timing.delay(0.3)
        ready, scheduled = make_envelope(upnext_queue), make_envelope(upnext_queue, delay=delay)
        await broker.enqueue_many([ready, scheduled])
        assert await broker.cancel(upnext_queue, ready.id), violated(
            "cancel() of a queued job must return True"
        )
        assert await broker.cancel(upnext_queue, scheduled.id), violated(
            "cancel() of a scheduled job must return True"
        )
        wait = quantized(broker, delay) + timing.tolerance(0.5)
        got = await receive(broker, [upnext_queue], wait=wait)
        assert got == [], violated("a cancelled job must never be handed out")
        assert not await broker.cancel(upnext_queue, ready.id), violated(
            "cancel() of an already cancelled job must return False"
        )

    @pytest.mark.asyncio
    async def test_cancel_of_held_or_unknown_job_returns_false(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """cancel() of a held job returns False and leaves it held; of an unknown job, False."""
        require(broker, "cancel_queued")
        await broker.enqueue_many([make_envelope(upnext_queue)])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        assert not await broker.cancel(upnext_queue, held.envelope.id), violated(
            "cancel() of a job a receiver holds must return False"
        )
        assert await broker.settle([Ack(held)]) == [None], violated(
            "a failed cancel() must leave the held job settleable"
        )
        assert not await broker.cancel(upnext_queue, "no-such-job"), violated(
            "cancel() of an unknown job must return False"
        )


async def _drain_concurrently(
    broker: Broker, queue: str, total: int, timing: Timing
) -> list[Delivery]:
    """Four blocked receivers drain `total` jobs enqueued in batches; every hand-out."""
    held: list[Delivery] = []
    deadline = time.monotonic() + timing.tolerance(20.0)

    async def receiver() -> None:
        while len({d.envelope.id for d in held}) < total and time.monotonic() < deadline:
            held.extend(
                await receive(broker, [queue], wait=timing.delay(0.2), lease=600.0, limit=10)
            )

    async def producer() -> None:
        # Receivers are already blocked, so each batch wakes them all at once.
        await asyncio.sleep(timing.delay(0.1))
        for _ in range(4):
            await broker.enqueue_many([make_envelope(queue) for _ in range(total // 4)])

    await asyncio.gather(producer(), *(receiver() for _ in range(4)))
    # A broker that ignores leases hands the drained jobs out again now.
    held.extend(await receive(broker, [queue], wait=timing.delay(0.3), limit=total))
    return held
