"""Raw aio-pika on RabbitMQ: no framework at all, the floor under every AMQP job queue.

produce: persistent messages (the body is the job index) to one durable classic
queue through a channel with publisher confirms; up to 500 one at a time, each
publish awaited until its confirm, the rest in batches of 500 publishes sent
together and their confirms awaited together (``asyncio.gather``).
work: one consumer, prefetch 20 (2 x concurrency 10, as upnext), each message
runs the probe and is acked on its own; uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import Any

import _probe
import _servers
import aio_pika

QUEUE = "bench_aiopika"


async def _connect(config: _probe.Config) -> tuple[Any, Any]:
    connection = await aio_pika.connect(config.url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(QUEUE, durable=True)
    return connection, channel


async def _produce(config: _probe.Config) -> dict[str, Any]:
    connection, channel = await _connect(config)
    exchange = channel.default_exchange

    async def one(i: int) -> None:
        message = aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(message, routing_key=QUEUE)

    async def batch(chunk: Sequence[int]) -> None:
        await asyncio.gather(*(one(i) for i in chunk))

    rates = await _probe.produce_async(config, one, batch)
    await connection.close()
    return rates


async def _work(config: _probe.Config) -> None:
    probe = _probe.Probe(config)
    connection = await aio_pika.connect(config.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=2 * config.concurrency)
    queue = await channel.declare_queue(QUEUE, durable=True)

    async def on_message(message: Any) -> None:
        probe.hit(int(message.body))
        await message.ack()

    await queue.consume(on_message)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await connection.close()


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _servers.clean_rabbit([QUEUE], (), c.url),
            "produce": lambda c: asyncio.run(_produce(c)),
            "work": lambda c: asyncio.run(_work(c)),
        }
    )


if __name__ == "__main__":
    main()
