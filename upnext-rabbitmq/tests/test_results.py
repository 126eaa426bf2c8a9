"""Results over reply queues between processes (the suite only sees one broker)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest
import upnext
from upnext.broker.protocol import Ack, Envelope, ResultWrite
from upnext.errors import WaitTimeout
from upnext_rabbitmq import RabbitBroker, topology
from upnext_rabbitmq.results import ReplyInbox

Factory = Callable[..., Awaitable[RabbitBroker]]


async def test_worker_publishes_to_the_producers_reply_queue(
    make_broker: Factory, upnext_queue: str
) -> None:
    """A result settled by another broker reaches the submitter's waiter, not others."""
    # Separate inboxes: three processes, as far as results go.
    producer = await make_broker(inbox=ReplyInbox())
    worker = await make_broker(inbox=ReplyInbox())
    bystander = await make_broker(inbox=ReplyInbox())
    reply_to = producer.reply_address()
    assert reply_to is not None
    assert reply_to.startswith("upnext.reply.")
    assert reply_to != worker.reply_address()
    await producer.enqueue_many([Envelope("job", upnext_queue, b"x")])
    waiter = asyncio.create_task(producer.get_result("job", queue=upnext_queue, wait=5))
    [held] = await worker.receive([upnext_queue], limit=1, lease=30, wait=5)
    write = ResultWrite("job", upnext_queue, b"result", 60, reply_to)
    assert await worker.settle([Ack(held, write)]) == [None]
    assert await waiter == b"result"
    assert await bystander.get_result("job", queue=upnext_queue, wait=0.2) is None


async def test_results_without_reply_address_stay_in_this_process(
    make_broker: Factory, upnext_queue: str
) -> None:
    """reply_to=None or ttl=0: nothing is published; an address-less result stays local."""
    store = await make_broker(inbox=ReplyInbox())
    other = await make_broker(inbox=ReplyInbox())
    assert store._inbox.outgoing(ResultWrite("a", upnext_queue, b"r", 60, None)) is None
    assert store._inbox.outgoing(ResultWrite("b", upnext_queue, b"r", 0, "somewhere")) is None
    await store.put_results([ResultWrite("c", upnext_queue, b"r", 60, None)])
    assert await store.get_result("c", queue=upnext_queue, wait=0.1) == b"r"
    assert await other.get_result("c", queue=upnext_queue, wait=0.1) is None


async def test_reply_queue_is_durable_and_expires(make_broker: Factory) -> None:
    """The reply queue is client-named, durable and expires an hour after its process."""
    store = await make_broker()
    connection = store._connection
    assert connection is not None
    channel = await connection.channel()
    try:
        await channel.declare_queue(
            store.reply_address(),
            durable=True,
            arguments={"x-expires": topology.REPLY_QUEUE_EXPIRES_MS},
        )
    finally:
        await channel.close()


async def test_reply_address_survives_close_and_reconnect(
    make_broker: Factory, upnext_queue: str
) -> None:
    """After aclose() and connect(), or in a new broker, the same reply queue is consumed."""
    producer, worker = await make_broker(), await make_broker(inbox=ReplyInbox())
    address = producer.reply_address()
    await producer.aclose()
    await producer.connect()
    assert producer.reply_address() == address
    rebuilt = await make_broker()  # a new broker of this process: same inbox
    assert rebuilt.reply_address() == address
    await worker.put_results([ResultWrite("job", upnext_queue, b"late", 60, address)])
    assert await producer.get_result("job", queue=upnext_queue, wait=3) == b"late"


async def test_results_pair_with_a_shared_store_for_other_processes(
    amqp_url: str,
    broker: RabbitBroker,
    upnext_queue: str,
    queue_deleter: Callable[[set[str]], Awaitable[None]],
) -> None:
    """With results=redis://..., a process that did not submit the job reads its result.

    Without the pairing the result only reaches the submitter's reply queue:
    a reader elsewhere waits in vain. (A distinct URL gives the readers their
    own reply inboxes, as separate processes have.)
    """
    redis_url = os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    worker = upnext.Worker(upnext_queue, broker=amqp_url, results=redis_url, concurrency=2)

    @worker.task(name="double", result_ttl=30)
    async def double(x: int) -> int:
        return 2 * x

    sep = "&" if "?" in amqp_url else "?"
    paired = upnext.Worker(upnext_queue, broker=f"{amqp_url}{sep}prefetch=3", results=redis_url)
    alone = upnext.Worker(upnext_queue, broker=f"{amqp_url}{sep}prefetch=5")
    readers = [w.task(name="double", result_ttl=30)(double.fn) for w in (paired, alone)]
    try:
        async with worker:
            future = await double.submit(21)
            assert (await future.result(10)).value == 42
            got = await readers[0].future(future.job_id).result(5)
            assert got.value == 42
            with pytest.raises(WaitTimeout):
                await readers[1].future(future.job_id).result(0.5)
    finally:
        for w in (worker, paired, alone):
            await w.aclose()
        await queue_deleter({upnext_queue})
