"""What the conformance suite cannot see: AMQP flags, channel loss, prefetch, raw bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from pamqp import commands
from upnext.broker.protocol import Ack, Delivery, Envelope, Release, Retry
from upnext.errors import BrokerUnavailable, LeaseLost
from upnext.testing.proxy import FaultyProxy
from upnext_rabbitmq import RabbitBroker, topology
from upnext_rabbitmq._confirms import ConfirmConnection
from upnext_rabbitmq._wire import WireConnection

Factory = Callable[..., Awaitable[RabbitBroker]]


async def _take(
    broker: RabbitBroker, queue: str, count: int, within: float = 5.0
) -> list[Delivery]:
    out: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(out) < count and time.monotonic() < deadline:
        out += await broker.receive(
            [queue], limit=count - len(out), lease=30, wait=deadline - time.monotonic()
        )
    assert len(out) == count, f"got {len(out)} of {count}"
    return out


async def test_undecodable_bytes_are_delivered_as_is(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str
) -> None:
    """A raw message published by someone else arrives byte for byte, with an id."""
    await broker.enqueue_many([])
    await broker._ensure_queue(upnext_queue)
    raw = b"\xff\xfe not json \x00"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(raw), routing_key=topology.work_queue(upnext_queue)
        )
    finally:
        await connection.close()
    [got] = await _take(broker, upnext_queue, 1)
    assert got.envelope.body == raw
    assert got.envelope.id
    assert got.envelope.queue == upnext_queue
    await broker.settle([Ack(got)])


async def test_redelivered_is_the_amqp_flag(make_broker: Factory, upnext_queue: str) -> None:
    """A held job of a closed broker comes back redelivered; a buffered one does not."""
    first = await make_broker(prefetch="10")
    await first.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(2)])
    [held] = await _take(first, upnext_queue, 1)
    await asyncio.sleep(0.2)  # the second sits in the prefetch buffer, never handed out
    await first.aclose()
    second = await make_broker()
    got = await _take(second, upnext_queue, 2)
    flags = {d.envelope.id: d.redelivered for d in got}
    assert flags == {held.envelope.id: True, ({"j0", "j1"} - {held.envelope.id}).pop(): False}
    assert all(d.deliveries is None for d in got)
    await second.settle([Ack(d) for d in got])


async def test_channel_loss_turns_held_deliveries_into_lease_lost(
    broker: RabbitBroker, upnext_queue: str
) -> None:
    """After the consumer channel closes, settle reports LeaseLost and the job returns."""
    await broker.enqueue_many([Envelope("j", upnext_queue, b"x")])
    [held] = await _take(broker, upnext_queue, 1)
    channel = broker._cons()._channel
    assert channel is not None
    channel.wire.acks([(999_999, False)])  # unknown tag: the server closes the channel
    await asyncio.sleep(0.3)
    [outcome] = await broker.settle([Ack(held)])
    assert isinstance(outcome, LeaseLost)
    [again] = await _take(broker, upnext_queue, 1)
    assert again.envelope.id == "j"
    assert again.redelivered
    assert await broker.settle([Ack(again)]) == [None]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_prefetch_window_grows_for_a_caller_holding_many(
    make_broker: Factory, upnext_queue: str, queue_type: str
) -> None:
    """prefetch=2 still hands out 6 jobs to a caller that settles none in between."""
    broker = await make_broker(prefetch="2", queue_type=queue_type)
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(6)])
    got = await _take(broker, upnext_queue, 6)
    assert broker._cons()._window >= 6
    assert await broker.settle([Ack(d) for d in got]) == [None] * 6


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_prefetch_windows_are_never_channel_wide(
    make_broker: Factory, upnext_queue: str, queue_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No basic.qos asks for a global window, widening included: RabbitMQ 4.3 refuses one."""
    sent: list[commands.Basic.Qos] = []
    real = WireConnection._send

    def spy(self: WireConnection, channel: int, value: Any) -> None:
        if isinstance(value, commands.Basic.Qos):
            sent.append(value)
        real(self, channel, value)

    monkeypatch.setattr(WireConnection, "_send", spy)
    broker = await make_broker(prefetch="2", queue_type=queue_type)
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(6)])
    got = await _take(broker, upnext_queue, 6)
    assert await broker.settle([Ack(d) for d in got]) == [None] * 6
    assert len(sent) >= 2, "the window was set, then widened"
    assert [qos.global_ for qos in sent] == [False] * len(sent)


async def test_settle_acks_a_contiguous_batch_with_one_multiple_ack(
    broker: RabbitBroker, upnext_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acking every held delivery sends one basic.ack(multiple=True)."""
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(5)])
    got = await _take(broker, upnext_queue, 5)
    channel = broker._cons()._channel
    assert channel is not None
    calls: list[tuple[int, bool]] = []
    real = channel.wire.acks

    def spy(acks: list[tuple[int, bool]]) -> None:
        calls.extend(acks)
        real(acks)

    monkeypatch.setattr(channel.wire, "acks", spy)
    assert await broker.settle([Ack(d) for d in reversed(got)]) == [None] * 5
    assert calls == [(max(d.receipt.tag for d in got), True)]  # type: ignore[attr-defined]


async def test_release_is_a_republish_not_a_requeue(
    broker: RabbitBroker, upnext_queue: str
) -> None:
    """A released job comes back with redelivered=False (never nack(requeue=True))."""
    await broker.enqueue_many([Envelope("j", upnext_queue, b"x")])
    [held] = await _take(broker, upnext_queue, 1)
    assert await broker.settle([Release(held)]) == [None]
    [back] = await _take(broker, upnext_queue, 1)
    assert (back.envelope.id, back.envelope.body, back.redelivered) == ("j", b"x", False)
    await broker.settle([Ack(back)])


async def test_consumers_and_results_survive_connection_cuts(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str, proxy: FaultyProxy, proxied_url: str
) -> None:
    """Five cuts through a TCP proxy: consumers come back, no job lost, waiters get results."""
    sep = "&" if "?" in proxied_url else "?"
    proxied = RabbitBroker(f"{proxied_url}{sep}reconnect_interval=0.1")
    await proxied.connect()
    try:
        done = await _run_through_cuts(proxied, proxy, upnext_queue)
        assert await _consumer_count(amqp_url, upnext_queue) == 1
    finally:
        await proxied.aclose()
        broker._declared.add(upnext_queue)  # deleted with the fixture's queues
    assert done == {f"j{i}" for i in range(25)}


async def _consumer_count(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(topology.work_queue(queue), passive=True)
        return declared.declaration_result.consumer_count or 0
    finally:
        await connection.close()


async def _run_through_cuts(broker: RabbitBroker, proxy: Any, queue: str) -> set[str]:
    from upnext.broker.protocol import ResultWrite

    done: set[str] = set()
    for round_ in range(5):
        jobs = [Envelope(f"j{round_ * 5 + i}", queue, b"x") for i in range(5)]
        await broker.enqueue_many(jobs)
        held = await _take(broker, queue, 5, within=10)
        proxy.cut()
        await asyncio.sleep(0.2)  # the client notices the cut on its next read
        outcomes = await broker.settle([Ack(d) for d in held])
        assert all(isinstance(o, LeaseLost) for o in outcomes)
        again = await _take(broker, queue, 5, within=15)
        assert all(d.redelivered for d in again)
        reply = broker.reply_address()
        writes = [ResultWrite(d.envelope.id, queue, b"ok", 60, reply) for d in again]
        assert (
            await broker.settle([Ack(d, w) for d, w in zip(again, writes, strict=True)])
            == [None] * 5
        )
        for d in again:
            assert await broker.get_result(d.envelope.id, queue=queue, wait=2) == b"ok"
        done |= {d.envelope.id for d in again}
    return done


async def test_quorum_queues_count_deliveries(make_broker: Factory, upnext_queue: str) -> None:
    """On quorum queues a job whose holder died comes back with deliveries == 2."""
    first = await make_broker(queue_type="quorum")
    await first.enqueue_many([Envelope("j", upnext_queue, b"x")])
    [held] = await _take(first, upnext_queue, 1)
    assert (held.redelivered, held.deliveries) == (False, 1)
    await first.aclose()
    second = await make_broker(queue_type="quorum")
    [again] = await _take(second, upnext_queue, 1)
    assert (again.redelivered, again.deliveries) == (True, 2)
    await second.settle([Ack(again)])


async def test_long_prefetched_jobs_are_given_back_before_consumer_timeout(
    make_broker: Factory, upnext_queue: str
) -> None:
    """A job waiting in the prefetch buffer a quarter of consumer_timeout is re-published."""
    broker = await make_broker(consumer_timeout="0.8", prefetch="10")
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, f"b{i}".encode()) for i in range(3)])
    [first] = await _take(broker, upnext_queue, 1)
    await asyncio.sleep(0.2)
    first_tags = {m.delivery_tag for _, m in broker._cons()._buffer.messages()}
    await asyncio.sleep(0.6)
    rest = await _take(broker, upnext_queue, 2)
    assert {first.envelope.body, *(d.envelope.body for d in rest)} == {b"b0", b"b1", b"b2"}
    assert not any(d.redelivered for d in rest)
    assert not first_tags & {d.receipt.tag for d in rest}  # type: ignore[attr-defined]
    assert await broker.settle([Ack(d) for d in [first, *rest]]) == [None] * 3


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_give_back_prefetched_holds_nothing_until_the_next_receive(
    make_broker: Factory, upnext_queue: str, queue_type: str
) -> None:
    """Prefetched jobs go back uncounted and none arrive until `receive` is called again.

    Core calls this before a job that lost a run starts alone: were the
    process to die then, only that job must come back redelivered.
    """
    first = await make_broker(prefetch="10", queue_type=queue_type)
    await first.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(4)])
    [held] = await _take(first, upnext_queue, 1)
    await asyncio.sleep(0.2)  # the other three sit in the prefetch buffer
    assert first._cons().buffered(upnext_queue) == 3
    await first.give_back_prefetched()
    await first.enqueue_many([Envelope("late", upnext_queue, b"x")])
    await asyncio.sleep(0.3)
    assert first._cons().buffered(upnext_queue) == 0, "nothing is taken until the next receive"
    second = await make_broker(queue_type=queue_type)
    others = await _take(second, upnext_queue, 4)
    assert {d.envelope.id for d in others} == {"j0", "j1", "j2", "j3", "late"} - {held.envelope.id}
    assert not any(d.redelivered for d in others), "a give-back is not a lost run"
    assert await second.settle([Ack(d) for d in others]) == [None] * 4
    await second.aclose()  # or it would take the next job
    assert await first.settle([Ack(held)]) == [None]
    await first.enqueue_many([Envelope("after", upnext_queue, b"x")])
    [after] = await _take(first, upnext_queue, 1)  # consuming resumed
    assert after.envelope.id == "after"
    assert await first.settle([Ack(after)]) == [None]


async def test_prefetched_jobs_that_could_not_be_given_back_are_handed_out(
    make_broker: Factory, upnext_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A give-back whose copies fail to publish keeps the jobs buffered, not held unseen.

    Dropped from the buffer but still unacked, they would sit on the server
    until the channel closed (up to consumer_timeout).
    """
    broker = await make_broker(prefetch="10")
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(3)])
    [held] = await _take(broker, upnext_queue, 1)
    await asyncio.sleep(0.2)  # the other two sit in the prefetch buffer
    assert broker._cons().buffered(upnext_queue) == 2

    async def unavailable(messages: Any) -> list[Any]:
        return [BrokerUnavailable("publisher down")] * len(messages)

    monkeypatch.setattr(broker._pub(), "publish", unavailable)
    await broker.give_back_prefetched()
    monkeypatch.undo()
    assert broker._cons().buffered(upnext_queue) == 2
    rest = await _take(broker, upnext_queue, 2, within=2.0)
    assert {d.envelope.id for d in rest} == {"j0", "j1", "j2"} - {held.envelope.id}
    assert not any(d.redelivered for d in rest)
    assert await broker.settle([Ack(d) for d in [held, *rest]]) == [None] * 3


async def _redelivered(make_broker: Factory, queue: str, queue_type: str) -> RabbitBroker:
    """A broker holding job "j" in its prefetch buffer, redelivered (its first holder died)."""
    first = await make_broker(queue_type=queue_type)
    await first.enqueue_many([Envelope("j", queue, b"x")])
    await _take(first, queue, 1)
    await first.aclose()  # held, never settled: back on the server, redelivered
    second = await make_broker(prefetch="10", queue_type=queue_type)
    await second._cons().ensure([queue], 10)  # consumes into the buffer, hands out nothing
    await second._cons().wait([queue], 5.0)  # returns once the delivery is buffered
    assert second._cons().buffered(queue) == 1
    return second


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_released_redelivery_comes_back_a_redelivery(
    make_broker: Factory, upnext_queue: str, queue_type: str
) -> None:
    """Release is uncounted, not a reset: the lost hand-out before it still counts.

    Were the flag dropped, a job whose worker died could run once more than
    max_lost_runs allows (a crash-looping job on RabbitMQ ran 5 times, not 4).
    """
    holder = await _redelivered(make_broker, upnext_queue, queue_type)
    [again] = await _take(holder, upnext_queue, 1)
    assert again.redelivered
    assert await holder.settle([Release(again)]) == [None]
    [back] = await _take(holder, upnext_queue, 1)
    expected = 2 if queue_type == "quorum" else None
    assert (back.envelope.id, back.redelivered, back.deliveries) == ("j", True, expected)
    assert await holder.settle([Ack(back)]) == [None]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_given_back_redelivery_comes_back_a_redelivery(
    make_broker: Factory, upnext_queue: str, queue_type: str
) -> None:
    """A redelivered job given back from the prefetch buffer keeps its lost run."""
    holder = await _redelivered(make_broker, upnext_queue, queue_type)
    await holder.give_back_prefetched()
    await holder.aclose()
    other = await make_broker(queue_type=queue_type)
    [back] = await _take(other, upnext_queue, 1)
    expected = 2 if queue_type == "quorum" else None
    assert (back.envelope.id, back.redelivered, back.deliveries) == ("j", True, expected)
    assert await other.settle([Ack(back)]) == [None]


async def test_a_lost_consuming_connection_is_replaced_by_the_next_receive(
    broker: RabbitBroker, upnext_queue: str
) -> None:
    """The consumer's own connection drops: held and buffered jobs come back, redelivered.

    Receipts of the lost connection settle nothing (LeaseLost); the next
    receive connects again and consumes, without waiting for anything else.
    """
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(3)])
    [held] = await _take(broker, upnext_queue, 1)
    consumer = broker._cons()
    channel = consumer._channel
    assert channel is not None
    assert channel.wire._transport is not None
    channel.wire._transport.abort()
    await asyncio.sleep(0.1)
    assert channel.is_closed
    [outcome] = await broker.settle([Ack(held)])
    assert isinstance(outcome, LeaseLost)
    back = await _take(broker, upnext_queue, 3, within=5.0)
    assert sorted(d.envelope.id for d in back) == ["j0", "j1", "j2"]
    assert {d.envelope.id for d in back if d.redelivered} >= {held.envelope.id}
    assert consumer._channel is not None
    assert consumer._channel.wire is not channel.wire
    assert await broker.settle([Ack(d) for d in back]) == [None] * 3


async def test_a_failed_publish_on_a_live_delivery_is_retried_not_lost(
    broker: RabbitBroker, upnext_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after a reconnect the publishing channel may lag the consuming one.

    A Retry whose copy could not be published then raises (core settles it
    again); reported LeaseLost, the delivery would stay unacked on the live
    channel and its job stuck.
    """
    await broker.enqueue_many([Envelope("r", upnext_queue, b"x")])
    [got] = await _take(broker, upnext_queue, 1)
    publisher = broker._pub()
    real = publisher.publish

    async def unavailable(messages: Any) -> list[Any]:
        return [BrokerUnavailable("publishing channel not back yet")] * len(messages)

    monkeypatch.setattr(publisher, "publish", unavailable)
    with pytest.raises(BrokerUnavailable):
        await broker.settle([Retry(got, b"y", 0.0)])
    monkeypatch.setattr(publisher, "publish", real)
    assert await broker.settle([Retry(got, b"y", 0.0)]) == [None]
    [again] = await _take(broker, upnext_queue, 1)
    assert again.envelope.body == b"y"
    await broker.settle([Ack(again)])


async def test_buffered_jobs_of_a_lost_connection_are_not_given_back_twice(
    make_broker: Factory, upnext_queue: str, amqp_url: str
) -> None:
    """Jobs buffered when the consumer's connection dropped are the server's again: no copies."""
    broker = await make_broker(prefetch="10")
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(5)])
    await _take(broker, upnext_queue, 1)
    await asyncio.sleep(0.2)  # the other four sit in the prefetch buffer
    consumer = broker._cons()
    assert consumer.buffered(upnext_queue) == 4
    assert consumer._wire is not None
    assert consumer._wire._transport is not None
    consumer._wire._transport.abort()
    await asyncio.sleep(0.1)
    await broker.give_back_prefetched()  # what a stop or a suspect job's isolation does
    await asyncio.sleep(0.2)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.work_queue(upnext_queue), passive=True)
        assert queue.declaration_result.message_count == 5


async def test_a_receive_cut_short_mid_consume_leaves_no_unknown_consumer(
    upnext_queues: Callable[[int], list[str]],
    queue_deleter: Callable[[set[str]], Awaitable[None]],
    amqp_url: str,
    proxy: FaultyProxy,
    proxied_url: str,
) -> None:
    """A consume whose receive timed out still starts; stop cancels it like any other."""
    first, second = upnext_queues(2)
    sep = "&" if "?" in proxied_url else "?"
    broker = RabbitBroker(f"{proxied_url}{sep}prefetch=10")
    await broker.connect()
    try:
        links = len(proxy.links)
        await broker.receive([first], limit=1, lease=30, wait=0.05)  # the consumer connects
        [consumer_link] = proxy.links[links:]
        await broker._ensure_levels(second)
        consumer_link.flowing.clear()  # the server is slow to answer the consumer
        assert await broker.receive([first, second], limit=1, lease=30, wait=0.0) == []
        proxy.blackhole(False)
        await asyncio.sleep(0.3)
        await broker.receive([first, second], limit=1, lease=30, wait=0.05)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()

            async def consumers() -> int | None:
                name = topology.work_queue(second)
                queue = await channel.declare_queue(name, passive=True)
                return queue.declaration_result.consumer_count

            assert await consumers() == 1
            await broker.give_back_prefetched()
            assert await consumers() == 0
    finally:
        await broker.aclose()
        await queue_deleter({first, second})


async def test_a_message_id_that_is_not_utf8_is_handed_out_with_the_others(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str
) -> None:
    """A foreign message's undecodable id neither raises nor strands its batch."""
    await broker._ensure_queue(upnext_queue)
    publisher = await ConfirmConnection.open(amqp_url)
    try:
        assert publisher._transport is not None
        write = publisher._transport.write
        publisher._transport.write = lambda data: write(  # type: ignore[method-assign]
            bytes(data).replace(b"\x06ZZZZZZ", b"\x06\xff\xfe-bad")
        )
        for message_id in ("good-1", "good-2", "ZZZZZZ"):
            properties = commands.Basic.Properties(message_id=message_id, delivery_mode=2)
            await publisher.publish(
                "", topology.work_queue(upnext_queue), b"x", properties, mandatory=True
            )
    finally:
        await publisher.close()
    got = await _take(broker, upnext_queue, 3)
    assert [d.envelope.id for d in got] == ["good-1", "good-2", "\ufffd\ufffd-bad"]
    assert await broker.settle([Ack(d) for d in got]) == [None] * 3
