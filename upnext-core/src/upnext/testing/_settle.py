"""Lease and settle tests, mixed into `BrokerConformance`."""

from __future__ import annotations

import asyncio
import time

import pytest

from upnext.broker.protocol import (
    Ack,
    Broker,
    DeadLetter,
    DeadLetterAdmin,
    Release,
    ResultWrite,
    Retry,
    SettleItem,
)
from upnext.errors import LeaseLost
from upnext.testing._support import (
    Timing,
    ack_all,
    blocked_receiver,
    make_envelope,
    make_record,
    own_result_store,
    quantized,
    receive,
    receive_exactly,
    require,
    violated,
)

__all__ = ["LeaseAndSettleConformance"]


class LeaseAndSettleConformance:
    """Leases (hide, expire, extend, LeaseLost) and every settle item."""

    @pytest.mark.asyncio
    async def test_lease_hides_job_from_other_receivers(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A held job is not handed to another receiver while its lease lasts."""
        await broker.enqueue_many([make_envelope(upnext_queue)])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        other = await receive(broker, [upnext_queue], wait=timing.delay(0.5))
        assert other == [], violated("a leased job must be hidden from other receivers")
        assert await broker.settle([Ack(held)]) == [None], violated("a live lease must settle")

    @pytest.mark.asyncio
    async def test_expired_lease_redelivers(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """An unsettled job comes back after its lease (not before) marked redelivered."""
        require(broker, "timed_leases")
        lease = timing.delay(0.5)
        envelope = make_envelope(upnext_queue)
        await broker.enqueue_many([envelope])
        before = time.monotonic()
        [first] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=lease
        )
        after = time.monotonic()
        assert not first.redelivered, violated("a first hand-out must have redelivered=False")
        got = await receive(broker, [upnext_queue], wait=timing.delay(10.0))
        returned = time.monotonic()
        assert [d.envelope.id for d in got] == [envelope.id], violated(
            "a job whose lease expired must be handed out again"
        )
        assert returned - before >= lease - 0.005, violated(
            "a leased job must not be handed out again before its lease expires"
        )
        assert returned - after <= lease + timing.tolerance(0.5), violated(
            "a job whose lease expired must be runnable again within lease + 0.5 s"
        )
        assert got[0].redelivered, violated("a redelivery must have redelivered=True")
        assert got[0].envelope.body == envelope.body, violated("a redelivery keeps the body")
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_redelivery_is_counted(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """deliveries counts hand-outs: 1 at first, 2 after a lease expired."""
        require(broker, "timed_leases")
        require(broker, "counts_deliveries")
        await broker.enqueue_many([make_envelope(upnext_queue)])
        [first] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=timing.delay(0.3)
        )
        [second] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(5.0))
        assert (first.deliveries, second.deliveries) == (1, 2), violated(
            "deliveries must count hand-outs since the body was written (1, then 2)"
        )
        await ack_all(broker, [second])

    @pytest.mark.asyncio
    async def test_extend_prolongs_lease(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """extend() pushes a live lease out, so the job stays hidden past its first lease."""
        require(broker, "timed_leases")
        await broker.enqueue_many([make_envelope(upnext_queue)])
        [held] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=timing.delay(0.4)
        )
        await asyncio.sleep(timing.delay(0.2))
        outcomes = await broker.extend([held], lease=timing.delay(1.5))
        assert outcomes == [None], violated(f"extend() of a live lease must succeed: {outcomes}")
        other = await receive(broker, [upnext_queue], wait=timing.delay(0.6))
        assert other == [], violated("an extended lease must keep the job hidden")
        assert await broker.settle([Ack(held)]) == [None], violated(
            "an extended lease must still settle"
        )

    @pytest.mark.asyncio
    async def test_lease_lost_is_reported_per_item(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """extend/settle of a taken-over job report LeaseLost for it alone; others succeed."""
        require(broker, "timed_leases")
        require(broker, "checked_settles")
        await broker.enqueue_many([make_envelope(upnext_queue), make_envelope(upnext_queue)])
        short = timing.delay(0.3)
        [lost] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=short
        )
        [kept] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(2.0))
        [taker] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(5.0))
        assert taker.envelope.id == lost.envelope.id, violated("an expired job must be redelivered")
        extended = await broker.extend([lost, kept], lease=30.0)
        assert isinstance(extended[0], LeaseLost), violated(
            f"extend() of a taken-over job must report LeaseLost, got {extended}"
        )
        assert extended[1] is None, violated(
            f"a LeaseLost item must not affect the others of an extend(), got {extended}"
        )
        settled = await broker.settle([Ack(lost), Ack(kept)])
        assert isinstance(settled[0], LeaseLost), violated(
            f"settle() of a taken-over job must report LeaseLost, got {settled}"
        )
        assert settled[1] is None, violated(
            f"a LeaseLost item must not affect the others of a settle(), got {settled}"
        )
        assert await receive(broker, [upnext_queue], wait=timing.delay(0.3)) == [], violated(
            "a LeaseLost settle must not release the new holder's job"
        )
        assert await broker.settle([Ack(taker)]) == [None], violated(
            "the new holder must still settle after a stale LeaseLost settle"
        )

    @pytest.mark.asyncio
    async def test_settle_after_lease_expiry_reports_lease_lost(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Settling after the lease expired reports LeaseLost and changes nothing."""
        require(broker, "timed_leases")
        require(broker, "checked_settles")
        envelope = make_envelope(upnext_queue)
        await broker.enqueue_many([envelope])
        lease = timing.delay(0.3)
        [held] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=lease
        )
        await asyncio.sleep(lease + timing.tolerance(0.1))
        outcomes = await broker.settle([Retry(held, b"replaced", 60.0)])
        assert isinstance(outcomes[0], LeaseLost), violated(
            f"settle() after the lease expired must report LeaseLost, got {outcomes}"
        )
        got = await receive(broker, [upnext_queue], wait=timing.delay(2.0))
        assert [d.envelope.body for d in got] == [envelope.body], violated(
            "a LeaseLost settle must change nothing: the job stays due with its old body"
        )
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_unchecked_late_settle_touches_only_its_own_job(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Without checked_settles a late Ack may act on its job, never on another, never raise."""
        require(broker, "timed_leases")
        require(broker, "checked_settles", False)
        await broker.enqueue_many([make_envelope(upnext_queue), make_envelope(upnext_queue)])
        short = timing.delay(0.3)
        [late] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=short
        )
        [kept] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(2.0))
        [taker] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(5.0))
        settled = await broker.settle([Ack(late), Ack(kept)])
        assert settled[0] is None or isinstance(settled[0], LeaseLost), violated(
            f"a late settle reports None or LeaseLost, got {settled[0]!r}"
        )
        assert settled[1] is None, violated(f"a late settle must not affect others: {settled}")
        outcome = (await broker.settle([Ack(taker)]))[0]
        assert outcome is None or isinstance(outcome, LeaseLost), violated(
            f"the new holder's settle reports None or LeaseLost, got {outcome!r}"
        )
        got = await receive(broker, [upnext_queue], wait=short + timing.tolerance(0.5))
        assert got == [], violated("a job acked (late or not) by every holder is gone")

    @pytest.mark.asyncio
    async def test_ack_removes_job(self, broker: Broker, upnext_queue: str, timing: Timing) -> None:
        """An acked job is never handed out again, even after its lease would have expired."""
        await broker.enqueue_many([make_envelope(upnext_queue)])
        lease = timing.delay(0.3)
        [held] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=lease
        )
        assert await broker.settle([Ack(held)]) == [None], violated("a live lease must settle")
        got = await receive(broker, [upnext_queue], wait=lease + timing.tolerance(0.5))
        assert got == [], violated("an acked job must never be handed out again")

    @pytest.mark.asyncio
    async def test_retry_replaces_body_and_honours_delay(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Retry replaces the body and the job is due again after its delay, not before."""
        await broker.enqueue_many([make_envelope(upnext_queue)])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(2.0))
        delay = timing.delay(0.5)
        async with blocked_receiver(broker, [upnext_queue], wait=timing.delay(10.0)) as task:
            before = time.monotonic()
            assert await broker.settle([Retry(held, b"retried", delay)]) == [None]
            after = time.monotonic()
            got, returned = await task
        assert [d.envelope.body for d in got] == [b"retried"], violated(
            "Retry must replace the body"
        )
        assert returned - before >= delay - 0.005, violated(
            f"a retried job must not be handed out before its delay ({returned - before:.3f} s)"
        )
        late = returned - after - quantized(broker, delay)
        assert late <= timing.tolerance(0.5), violated(
            f"a retried job must be handed out within 0.5 s of its delay ({late:.3f} s late)"
        )
        assert not got[0].redelivered, violated("a retried job must have redelivered=False")
        if broker.capabilities.counts_deliveries:
            assert got[0].deliveries == 1, violated("Retry must restart the count at 1")
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_retry_restarts_delivery_count(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """After Retry the next hand-out has redelivered=False and deliveries == 1."""
        require(broker, "timed_leases")
        require(broker, "counts_deliveries")
        await broker.enqueue_many([make_envelope(upnext_queue)])
        await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=timing.delay(0.3)
        )
        [again] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(5.0))
        assert await broker.settle([Retry(again, b"retried", 0.0)]) == [None]
        [fresh] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(2.0))
        assert (fresh.redelivered, fresh.deliveries) == (False, 1), violated(
            "Retry must restart the count: redelivered=False, deliveries == 1, got "
            f"({fresh.redelivered}, {fresh.deliveries})"
        )
        await ack_all(broker, [fresh])

    @pytest.mark.asyncio
    async def test_dead_letter_removes_job_and_stores_record(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """DeadLetter removes the job and (with DLQ access) stores the record as given."""
        envelope = make_envelope(upnext_queue)
        await broker.enqueue_many([envelope])
        lease = timing.delay(0.3)
        [held] = await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=lease
        )
        record = make_record(upnext_queue, failed_at=time.time(), job_id=envelope.id)
        assert await broker.settle([DeadLetter(held, record)]) == [None]
        got = await receive(broker, [upnext_queue], wait=lease + timing.tolerance(0.5))
        assert got == [], violated("a dead-lettered job must never be handed out again")
        if broker.capabilities.dlq_access is not None and isinstance(broker, DeadLetterAdmin):
            stored = await broker.dlq_get(record.id)
            assert stored == record, violated("DeadLetter must store the record as given")

    @pytest.mark.asyncio
    async def test_release_returns_job_at_once_uncounted(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A released job is due again at once and the hand-out is not counted."""
        envelope = make_envelope(upnext_queue)
        await broker.enqueue_many([envelope])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(2.0))
        async with blocked_receiver(broker, [upnext_queue], wait=timing.delay(10.0)) as task:
            assert await broker.settle([Release(held)]) == [None]
            released = time.monotonic()
            got, returned = await task
        assert [d.envelope.body for d in got] == [envelope.body], violated(
            "a released job must come back unchanged"
        )
        assert returned - released <= timing.tolerance(0.3), violated(
            "a released job must be due again at once"
        )
        assert not got[0].redelivered, violated(
            "a released job must come back uncounted (redelivered=False)"
        )
        if broker.capabilities.counts_deliveries:
            assert got[0].deliveries == 1, violated(
                f"a release must not count as a hand-out (deliveries {got[0].deliveries} != 1)"
            )
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_release_of_a_redelivery_keeps_it_counted(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Release undoes only its own hand-out: a lost one before it still counts.

        Core charges a lost run for every redelivery; were Release to reset
        the flag, a job whose worker died could run more often than
        `max_lost_runs` allows.
        """
        require(broker, "timed_leases")
        await broker.enqueue_many([make_envelope(upnext_queue)])
        await receive_exactly(
            broker, [upnext_queue], 1, within=timing.delay(2.0), lease=timing.delay(0.3)
        )
        [again] = await receive_exactly(broker, [upnext_queue], 1, within=timing.delay(5.0))
        assert again.redelivered, violated("a redelivery must have redelivered=True")
        assert await broker.settle([Release(again)]) == [None]
        [back] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        assert back.redelivered, violated(
            "a released redelivery must come back redelivered (only its own hand-out is undone)"
        )
        if broker.capabilities.counts_deliveries:
            assert (again.deliveries, back.deliveries) == (2, 2), violated(
                "a released redelivery must come back with the same count, got "
                f"{again.deliveries} then {back.deliveries}"
            )
        await ack_all(broker, [back])

    @pytest.mark.asyncio
    async def test_settle_mixed_batch(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """One settle of Ack, Retry, DeadLetter and Release applies each item."""
        envelopes = [make_envelope(upnext_queue) for _ in range(4)]
        await broker.enqueue_many(envelopes)
        held = await receive_exactly(broker, [upnext_queue], 4, within=timing.tolerance(2.0))
        acked, retried, dead, released = held
        record = make_record(upnext_queue, failed_at=time.time(), job_id=dead.envelope.id)
        items: list[SettleItem] = [
            Ack(acked),
            Retry(retried, b"retried", 0.0),
            DeadLetter(dead, record),
            Release(released),
        ]
        assert await broker.settle(items) == [None] * 4, violated(
            "every item of a batch with live leases must settle"
        )
        back = await receive_exactly(broker, [upnext_queue], 2, within=timing.tolerance(2.0))
        bodies = {d.envelope.id: d.envelope.body for d in back}
        assert bodies == {
            retried.envelope.id: b"retried",
            released.envelope.id: released.envelope.body,
        }, violated("in a mixed batch only the retried and released jobs come back")
        await ack_all(broker, back)
        assert await receive(broker, [upnext_queue], wait=timing.delay(0.3)) == []

    @pytest.mark.asyncio
    async def test_settle_writes_result_when_broker_stores_results(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Ack and DeadLetter with a result store it when the broker is its own result store."""
        store = own_result_store(broker)
        envelopes = [make_envelope(upnext_queue) for _ in range(2)]
        await broker.enqueue_many(envelopes)
        acked, dead = await receive_exactly(broker, [upnext_queue], 2, within=timing.delay(2.0))
        reply_to = store.reply_address()

        def result(job_id: str) -> ResultWrite:
            return ResultWrite(job_id, upnext_queue, f"res-{job_id}".encode(), 60.0, reply_to)

        record = make_record(upnext_queue, failed_at=time.time(), job_id=dead.envelope.id)
        items: list[SettleItem] = [
            Ack(acked, result(acked.envelope.id)),
            DeadLetter(dead, record, result(dead.envelope.id)),
        ]
        assert await broker.settle(items) == [None, None]
        for delivery in (acked, dead):
            job_id = delivery.envelope.id
            data = await store.get_result(job_id, queue=upnext_queue, wait=timing.delay(2.0))
            assert data == f"res-{job_id}".encode(), violated(
                "a result given with Ack/DeadLetter must be stored with the settle"
            )
