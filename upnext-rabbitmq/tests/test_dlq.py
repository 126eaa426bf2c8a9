"""Dead-letter scans: busy admins, broker-side dead letters, duplicate records."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import aio_pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity
from upnext.broker.cursor import dead_letter_page
from upnext.broker.protocol import Ack, DeadLetter, DeadLetterRecord, Envelope, SettleItem
from upnext.errors import BrokerError, Busy
from upnext_rabbitmq import RabbitBroker, topology
from upnext_rabbitmq._publish import Outgoing, persistent
from upnext_rabbitmq.dlq import BROKER_REASON, DeadLetterScan, record_message

Factory = Callable[..., Awaitable[RabbitBroker]]


def _record(queue: str, entry_id: str = "e1") -> DeadLetterRecord:
    return DeadLetterRecord(entry_id, "job-1", queue, "tests.fn", "boom", time.time(), b"\x00data")


async def test_a_second_admin_is_told_busy(make_broker: Factory, upnext_queue: str) -> None:
    """While one admin scans a DLQ, another process's admin gets `Busy` (a BrokerError)."""
    first = await make_broker()
    second = await make_broker(dlq_busy_wait="0.2")
    await first._pub().publish_all([record_message(_record(upnext_queue))], "test")
    async with first._scan([upnext_queue]) as scan:
        assert list(scan.entries) == ["e1"]
        with pytest.raises(Busy, match="busy"):
            await dead_letter_page(second, queue=upnext_queue)
    page = await dead_letter_page(second, queue=upnext_queue)
    assert [r.id for r in page.records] == ["e1"]


async def test_a_scan_puts_entries_back_in_order(broker: RabbitBroker, upnext_queue: str) -> None:
    """Listing is non-destructive and keeps the queue's order (scan then requeue)."""
    records = [_record(upnext_queue, f"e{i}") for i in range(5)]
    await broker._pub().publish_all([record_message(r) for r in records], "test")
    for _ in range(2):
        async with broker._scan([upnext_queue]) as scan:
            assert list(scan.entries) == [r.id for r in records]
    assert await broker.dlq_count(upnext_queue) == 5


async def test_duplicate_records_collapse(broker: RabbitBroker, upnext_queue: str) -> None:
    """A record published twice (crash between publish and ack) lists once, deletes fully."""
    record = _record(upnext_queue)
    await broker._pub().publish_all([record_message(record), record_message(record)], "test")
    page = await dead_letter_page(broker, queue=upnext_queue)
    assert page.records == [record]
    assert await broker.dlq_count(upnext_queue) == 1
    await broker.dlq_delete(record.id)
    assert await broker._passive_count(topology.dlq_queue(upnext_queue)) == 0


async def test_broker_side_dead_letters_are_listed(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str
) -> None:
    """A job rejected by some other consumer lands in the DLQ via the DLX, shown as such."""
    await broker._ensure_queue(upnext_queue)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"job body", message_id="job-9"),
            routing_key=topology.work_queue(upnext_queue),
        )
        queue = await channel.get_queue(topology.work_queue(upnext_queue), ensure=False)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.reject(requeue=False)
    finally:
        await connection.close()
    await asyncio.sleep(0.1)
    [record] = (await dead_letter_page(broker, queue=upnext_queue)).records
    assert (record.reason, record.job_id, record.queue, record.data) == (
        BROKER_REASON,
        "job-9",
        upnext_queue,
        b"job body",
    )
    assert abs(record.failed_at - time.time()) < 5
    assert await broker.dlq_get(record.id) == record


async def test_large_and_empty_records_read_back_exactly(
    broker: RabbitBroker, upnext_queue: str
) -> None:
    """A record spanning several AMQP body frames, and one with no data, come back intact."""
    big = bytes(range(256)) * 1500  # 384,000 bytes: three body frames at frame_max 128 KiB
    records = [
        DeadLetterRecord("big", "j1", upnext_queue, "fn", "boom", time.time(), big),
        DeadLetterRecord("empty", "j2", upnext_queue, "fn", "boom", time.time() + 1, b""),
    ]
    await broker._pub().publish_all([record_message(r) for r in records], "test")
    page = await dead_letter_page(broker, queue=upnext_queue)
    assert page.records == records[::-1]
    # A foreign message with no body at all (no body frame on the wire).
    bare = Outgoing("", topology.dlq_queue(upnext_queue), b"", persistent("bare"))
    await broker._pub().publish_all([bare], "test")
    listed = (await dead_letter_page(broker, queue=upnext_queue)).records
    [foreign] = [r for r in listed if r.reason == BROKER_REASON]
    assert (foreign.job_id, foreign.reason, foreign.data) == ("bare", BROKER_REASON, b"")


async def _keep_working(
    worker: RabbitBroker, queue: str, stop: asyncio.Event, worked: list[str], dead: list[str]
) -> None:
    """Enqueue, receive and ack jobs of `queue`, dead-lettering one per round, until `stop`."""
    n = 0
    while not stop.is_set():
        await worker.enqueue_many([Envelope(f"w{n}-{k}", queue, b"job") for k in range(20)])
        got = await worker.receive([queue], limit=20, lease=30, wait=0.5)
        settle: list[SettleItem] = [Ack(d) for d in got[1:]]
        if got:
            late = DeadLetterRecord(
                f"late{n}", got[0].envelope.id, queue, "tests.fn", "late", time.time(), b""
            )
            settle.append(DeadLetter(got[0], late))
            dead.append(late.id)
        assert await worker.settle(settle) == [None] * len(settle)
        worked.extend(d.envelope.id for d in got)
        n += 1


async def _all_ids(admin: RabbitBroker, queue: str) -> list[str]:
    """Every entry id, walking the pages by cursor."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await dead_letter_page(admin, queue=queue, limit=4000, cursor=cursor)
        seen += [r.id for r in page.records]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_first_page_of_ten_thousand_while_workers_consume(
    make_broker: Factory, upnext_queue: str
) -> None:
    """10,000 entries: first page in under 1 s, every entry listed once, workers unhindered.

    A worker keeps receiving, acking and dead-lettering jobs of the same queue
    during the scans; the figure measured on this machine is in
    docs/backends/rabbitmq.md. The best of three pages is held to the bar
    (so one scan slowed by a neighbour's load does not decide it) under
    ``nox -s acceptance``; in the suite, which runs beside other tests and
    under coverage, the figure is printed and the listing checked.
    """
    admin, worker = await make_broker(), await make_broker()
    base = time.time() - 100_000
    records = [
        DeadLetterRecord(f"e{i:05d}", f"j{i}", upnext_queue, "fn", "boom", base + i, b"\0" * 200)
        for i in range(10_000)
    ]
    for start in range(0, len(records), 1000):
        chunk = records[start : start + 1000]
        await admin._pub().publish_all([record_message(r) for r in chunk], "test")
    stop, worked, dead = asyncio.Event(), list[str](), list[str]()
    background = asyncio.create_task(_keep_working(worker, upnext_queue, stop, worked, dead))
    try:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            page = await dead_letter_page(admin, queue=upnext_queue, limit=50)
            timings.append(time.perf_counter() - started)
            ours = [r.id for r in page.records if r.id.startswith("e")]
            assert len(page.records) == 50
            assert ours == [r.id for r in records[::-1][: len(ours)]]
        seen = await _all_ids(admin, upnext_queue)
    finally:
        stop.set()
        await background
    assert len(worked) >= 20, "the worker was starved during the scans"
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    assert {r.id for r in records} <= set(seen), "an entry went missing"
    assert await admin.dlq_count(upnext_queue) == 10_000 + len(dead)
    print(f"first page of 10,000: {', '.join(f'{t:.3f}' for t in timings)} s")
    if os.environ.get("UPNEXT_ACCEPTANCE"):  # a speed figure: `nox -s acceptance` holds it
        assert min(timings) < 1.0, f"first page of 10,000 took {min(timings):.2f} s at best"


async def test_a_scan_that_lost_its_channel_removes_nothing_and_says_so(
    broker: RabbitBroker, upnext_queue: str
) -> None:
    """Once the server closed the scan's channel, remove raises; every entry is still there."""
    records = [_record(upnext_queue, f"e{i}") for i in range(3)]
    await broker._pub().publish_all([record_message(r) for r in records], "test")
    async with broker._scan([upnext_queue]) as scan:
        assert scan._wire is not None
        with pytest.raises(ChannelNotFoundEntity):  # as a DLQ deleted under the scan does
            await scan._wire.ready_count(f"upnext.missing.{upnext_queue}")
        with pytest.raises(BrokerError, match="lost its channel"):
            await scan.remove(list(scan.entries))
    assert await broker.dlq_count(upnext_queue) == 3


async def test_a_dlq_deleted_during_a_scan_starts_it_over(
    broker: RabbitBroker,
    upnext_queues: Callable[[int], list[str]],
    amqp_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deleted while the scan waits for a straggler: it starts over without it, and removes hold."""
    kept, doomed = upnext_queues(2)
    records = [_record(kept, f"e{i}") for i in range(3)]
    await broker._pub().publish_all([record_message(r) for r in records], "test")
    await broker._pub().publish_all([record_message(_record(doomed, "d"))], "test")
    subscribe = DeadLetterScan._subscribe
    calls: list[None] = []

    async def one_more_the_first_time(scan: DeadLetterScan) -> int:
        calls.append(None)
        counted = await subscribe(scan)
        if len(calls) > 1:
            return counted
        connection = await aio_pika.connect(amqp_url)  # while the scan waits for the straggler
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(topology.dlq_queue(doomed))
        return counted + 1

    monkeypatch.setattr(DeadLetterScan, "_subscribe", one_more_the_first_time)
    async with broker._scan([kept, doomed]) as scan:
        assert sorted(scan.entries) == ["e0", "e1", "e2"]
        assert await scan.remove(["e0"]) == 1
    assert len(calls) == 2
    monkeypatch.undo()
    assert await broker.dlq_count(kept) == 2
