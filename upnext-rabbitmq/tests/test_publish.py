"""The lean confirming publisher: nacks are errors, a lost connection is replaced on use."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from upnext.broker.protocol import Ack, Envelope
from upnext.errors import BrokerError
from upnext.testing.proxy import FaultyProxy
from upnext_rabbitmq import RabbitBroker, topology
from upnext_rabbitmq._publish import Outgoing, persistent


async def test_a_nacked_publish_is_an_error_not_a_confirm(
    broker: RabbitBroker, amqp_url: str
) -> None:
    """A queue at its length limit with reject-publish nacks: the publish fails loudly."""
    name = f"t-full-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        full = await channel.declare_queue(
            name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        first = Outgoing("", name, b"1", persistent("a"))
        second = Outgoing("", name, b"2", persistent("b"))
        publisher = broker._pub()
        assert await publisher.publish([first]) == [None]
        [error] = await publisher.publish([second])
        assert isinstance(error, BrokerError)
        assert "refused" in str(error)
        # The channel is still usable: the next publish to somewhere with room works.
        await full.purge()
        assert await publisher.publish([second]) == [None]
    finally:
        await channel.queue_delete(name)
        await connection.close()


@pytest.mark.parametrize("message_id", ["job-1", ""])
async def test_a_returned_publish_fails_whatever_its_message_id(
    broker: RabbitBroker, message_id: str
) -> None:
    """Nothing bound to the routing key: the publish fails, an empty message-id included."""
    nowhere = f"t-nowhere-{uuid.uuid4().hex[:8]}"
    [error] = await broker._pub().publish([Outgoing("", nowhere, b"x", persistent(message_id))])
    assert isinstance(error, BrokerError)
    assert "unroutable" in str(error)


async def test_a_return_fails_the_publish_it_returns_not_an_earlier_one_of_the_same_id(
    broker: RabbitBroker, amqp_url: str
) -> None:
    """Two in flight, same exchange, key and id; only the second routes nowhere: it fails."""
    name = f"t-headers-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.HEADERS)
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, arguments={"x-match": "all", "route": "yes"})
        routed = Outgoing(name, "", b"1", persistent("same", headers={"route": "yes"}))
        nowhere = Outgoing(name, "", b"2", persistent("same", headers={"route": "no"}))
        first, second = await broker._pub().publish([routed, nowhere])
        assert first is None
        assert isinstance(second, BrokerError)
        ok = await channel.declare_queue(name, passive=True)
        assert ok.declaration_result.message_count == 1
    finally:
        await channel.queue_delete(name)
        await channel.exchange_delete(name)
        await connection.close()


async def test_a_cut_publishing_connection_is_replaced_by_the_next_publish(
    amqp_url: str, upnext_queue: str, proxy: FaultyProxy, proxied_url: str
) -> None:
    """Cut (the server still there): the next enqueue connects again and succeeds at once."""
    broker = RabbitBroker(proxied_url)
    await broker.connect()
    try:
        await broker.enqueue_many([Envelope("before", upnext_queue, b"x")])
        first = broker._pub()._connection
        proxy.cut()
        await asyncio.sleep(0.1)
        assert first is not None
        assert not first.is_open
        loop = asyncio.get_running_loop()
        started = loop.time()
        await broker.enqueue_many([Envelope("after", upnext_queue, b"y")])
        assert loop.time() - started < 1.0
        assert broker._pub()._connection is not first
    finally:
        await broker.aclose()
    checker = await aio_pika.connect(amqp_url)
    try:
        channel = await checker.channel()
        queue = await channel.declare_queue(topology.work_queue(upnext_queue), passive=True)
        assert queue.declaration_result.message_count == 2
        for name in topology.amqp_queues(upnext_queue):
            await channel.queue_delete(name)
    finally:
        await checker.close()


@pytest.mark.parametrize("size", [0, 1, 131_072 - 8, 131_072 - 7, 300_000])
async def test_bodies_of_any_size_arrive_whole(
    broker: RabbitBroker, upnext_queue: str, size: int
) -> None:
    """Bodies are split into frames of the negotiated size and joined again on receipt."""
    body = bytes(i % 251 for i in range(size))
    await broker.enqueue_many([Envelope("big", upnext_queue, body)])
    got = await broker.receive([upnext_queue], limit=1, lease=30, wait=5.0)
    assert [d.envelope.body for d in got] == [body]
    assert await broker.settle([Ack(got[0])]) == [None]
