"""The lean connection's requests when their callers are cancelled halfway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika
from upnext.testing.proxy import FaultyProxy
from upnext_rabbitmq import RabbitBroker
from upnext_rabbitmq._wire import WireConnection
from upnext_rabbitmq._wire_message import WireMessage
from upnext_rabbitmq.topology import work_queue

Factory = Callable[..., Awaitable[RabbitBroker]]


async def test_a_cancel_cut_short_is_not_taken_for_the_next_ones_reply(
    make_broker: Factory,
    upnext_queues: Callable[[int], list[str]],
    amqp_url: str,
    proxy: FaultyProxy,
    proxied_url: str,
) -> None:
    """After a cancelled cancel(), the next cancel() waits for its own reply.

    Were it to take the first one's late reply, it would drop its consumer's
    receiver early, and a delivery still on its way would be read and lost
    (unbuffered, yet unacked: a later multiple ack would cover it).
    """
    first, second = upnext_queues(2)
    broker = await make_broker()
    for queue in (first, second):
        await broker._ensure_queue(queue)
    wire = await WireConnection.open(proxied_url)
    try:
        await wire.qos(10)
        received: list[WireMessage] = []
        tags = [await wire.consume(work_queue(first), received.append)]
        tags.append(await wire.consume(work_queue(second), received.append))
        proxy.delay = 0.2  # each way: a round trip takes 0.4 s
        cut_short = asyncio.create_task(wire.cancel(tags[0]))
        await asyncio.sleep(0.05)
        cut_short.cancel()
        await asyncio.gather(cut_short, return_exceptions=True)
        await asyncio.sleep(0.6)  # its reply has come by now
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            message = aio_pika.Message(b"x", message_id="on-its-way")
            await channel.default_exchange.publish(message, work_queue(second))
        started = asyncio.get_running_loop().time()
        await wire.cancel(tags[1])
        waited = asyncio.get_running_loop().time() - started
        assert [m.message_id for m in received] == ["on-its-way"]
        assert waited >= 0.3, "the reply came back sooner than a round trip"
    finally:
        await wire.close()
