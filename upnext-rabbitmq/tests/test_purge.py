"""purge() empties a queue's delay levels too, from any process, and only that queue's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from upnext.broker.protocol import Ack, Envelope
from upnext_rabbitmq import RabbitBroker

BrokerFactory = Callable[..., Awaitable[RabbitBroker]]


async def test_purge_from_another_process_drops_scheduled_jobs_of_that_queue_only(
    make_broker: BrokerFactory, upnext_queues: Callable[[int], list[str]]
) -> None:
    """A purge over its own connection drops ready and scheduled jobs; other queues keep theirs."""
    target, other = upnext_queues(2)
    worker = await make_broker()  # the worker's process: enqueues and consumes
    admin = await make_broker()  # the server's or CLI's process: purges
    delays = [0.3, 0.75, 1.25, 2.0, 2.5]
    await worker.enqueue_many(
        [Envelope(f"now{i}", target, b"ready") for i in range(2)]
        + [Envelope(f"later{i}", target, b"scheduled", d) for i, d in enumerate(delays)]
        + [Envelope("keep", other, b"other", 1.0)]
    )
    stats = await admin.stats(target)
    assert (stats.ready, stats.scheduled) == (2, len(delays))

    assert await admin.purge(target) == 2 + len(delays)

    stats = await admin.stats(target)
    assert (stats.ready, stats.scheduled) == (0, 0)
    # Every delay has passed by the end: nothing of the purged queue arrives, the other's does.
    seen: list[str] = []
    deadline = time.monotonic() + max(delays) + 0.75
    while time.monotonic() < deadline:
        got = await worker.receive([target, other], limit=10, lease=30, wait=0.25)
        seen += [d.envelope.id for d in got]
        assert await worker.settle([Ack(d) for d in got]) == [None] * len(got)
    assert seen == ["keep"]


async def test_purge_reaches_jobs_scheduled_before_a_reconnect(
    make_broker: BrokerFactory, upnext_queue: str
) -> None:
    """The scheduled jobs live on the server: a purge after the enqueuer reconnected drops them."""
    first = await make_broker()
    await first.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x", 1.0) for i in range(3)])
    await first.aclose()
    second = await make_broker()  # a new connection (a restarted process)
    assert await second.purge(upnext_queue) == 3
    await asyncio.sleep(1.5)
    assert await second.receive([upnext_queue], limit=10, lease=30, wait=0.3) == []
