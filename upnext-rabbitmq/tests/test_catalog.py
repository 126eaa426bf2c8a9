"""The queue catalog: admins reading it at once, in several processes, each see every name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from upnext.broker.protocol import Envelope
from upnext_rabbitmq import RabbitBroker

BrokerFactory = Callable[..., Awaitable[RabbitBroker]]


async def test_concurrent_readers_each_see_every_queue(
    make_broker: BrokerFactory, upnext_queues: Callable[[int], list[str]]
) -> None:
    """Four admins on their own connections list queues together, ten times: none misses one.

    The catalog is a queue that a read consumes and gives back; without an
    exclusive reader, simultaneous reads split its names between them (seen:
    29 of 40 reads missed a name) and the dashboard answered 404 for
    entries that existed.
    """
    names = upnext_queues(3)
    writer = await make_broker()
    await writer.enqueue_many([Envelope(f"job-{n}", n, b"x") for n in names])
    readers = [await make_broker() for _ in range(4)]
    misses = []
    for _ in range(10):
        for listed in await asyncio.gather(*(r.queues() for r in readers)):
            misses += [n for n in names if n not in listed]
    assert misses == []
