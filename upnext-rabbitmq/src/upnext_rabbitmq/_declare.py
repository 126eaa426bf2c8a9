"""Idempotent declarations of the topology described in `topology`.

The ladder's 50 declarations (and a queue's 50 level declarations) are sent
with ``nowait`` and confirmed by one synchronous declaration after them: a
channel handles its methods in order, so that reply means every one before it
succeeded, and a failure closes the channel, which fails the last one. One
round trip instead of fifty, so a queue's first delayed job is not late.

`QueueDeclarer` declares each upnext queue (and, before its first delay, its
levels) once per process, on the broker's declaring channel, and names the
queue in the catalog the first time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import AbstractConnection as RawConnection
from aiormq.exceptions import ChannelInvalidStateError, ChannelNotFoundEntity
from upnext.broker.redact import redact_url
from upnext.errors import BrokerUnavailable

from upnext_rabbitmq._errors import map_errors
from upnext_rabbitmq._options import RabbitOptions
from upnext_rabbitmq._publish import Outgoing, Publisher, persistent
from upnext_rabbitmq.topology import (
    CATALOG_QUEUE,
    DELIVER_EXCHANGE,
    LEVELS,
    UNROUTABLE_EXCHANGE,
    UNROUTABLE_QUEUE,
    check_queue_name,
    deliver_binding,
    dlq_queue,
    level_exchange,
    level_hold_binding,
    level_pass_binding,
    level_queue,
    level_queue_arguments,
    work_queue,
    work_queue_arguments,
)

__all__ = ["QueueDeclarer", "declare_ladder", "declare_levels", "declare_queue"]


async def declare_ladder(channel: RawChannel) -> None:
    """Declare the shared ladder exchanges, the deliver exchange, the unroutable sink, catalog."""
    await channel.exchange_declare(UNROUTABLE_EXCHANGE, exchange_type="fanout", durable=True)
    await channel.queue_declare(UNROUTABLE_QUEUE, durable=True)
    await channel.queue_bind(UNROUTABLE_QUEUE, UNROUTABLE_EXCHANGE, routing_key="")
    await channel.queue_declare(CATALOG_QUEUE, durable=True)
    await channel.exchange_declare(
        DELIVER_EXCHANGE,
        exchange_type="topic",
        durable=True,
        arguments={"alternate-exchange": UNROUTABLE_EXCHANGE},
    )
    for level in range(LEVELS):
        exchange = level_exchange(level)
        await channel.exchange_declare(exchange, exchange_type="topic", durable=True, nowait=True)
    # Every exchange exists before any binding names it as a destination.
    for level in range(LEVELS):
        pattern, onward = level_pass_binding(level)
        await channel.exchange_bind(onward, level_exchange(level), routing_key=pattern, nowait=True)
    await channel.exchange_declare(level_exchange(LEVELS - 1), passive=True)


async def declare_queue(
    channel: RawChannel, queue: str, *, quorum: bool = False, delivery_limit: int = 5
) -> None:
    """Declare `queue`'s work queue, its DLQ and its binding to the deliver exchange."""
    await channel.queue_declare(dlq_queue(queue), durable=True)
    await channel.queue_declare(
        work_queue(queue),
        durable=True,
        arguments=work_queue_arguments(queue, quorum=quorum, delivery_limit=delivery_limit),
    )
    await channel.queue_bind(
        work_queue(queue), DELIVER_EXCHANGE, routing_key=deliver_binding(queue)
    )


async def declare_levels(channel: RawChannel, queue: str) -> None:
    """Declare `queue`'s delay level queues and bind them to the shared level exchanges.

    Before a delayed job of `queue` enters the ladder: a message dead-lettered
    from one level to a missing next one would be dropped. The shared
    exchanges (`declare_ladder`) must exist: the level queues dead-letter into them.
    """
    for level in range(LEVELS):
        name = level_queue(queue, level)
        await channel.queue_declare(
            name, durable=True, arguments=level_queue_arguments(level), nowait=True
        )
        await channel.queue_bind(
            name, level_exchange(level), routing_key=level_hold_binding(queue, level), nowait=True
        )
    await channel.queue_declare(level_queue(queue, LEVELS - 1), passive=True)


class QueueDeclarer:
    """Declares upnext queues and their delay levels, each once per process.

    `channel` is the broker's declaring channel (None while not connected);
    `raw_connection` opens a channel of its own when that one was closed by a
    404, under `channel_lock` (shared with the admin); `publisher` writes a
    queue's name into the catalog.
    """

    def __init__(
        self,
        url: str,
        options: RabbitOptions,
        channel_lock: asyncio.Lock,
        *,
        raw_connection: Callable[[], RawConnection],
        publisher: Callable[[], Publisher],
    ) -> None:
        self.url = url
        self.options = options
        self.channel: AbstractRobustChannel | None = None
        self.declared: set[str] = set()
        # Queues whose delay levels this process declared (on their first delay).
        self.laddered: set[str] = set()
        self._declaring: dict[tuple[str, bool], asyncio.Task[None]] = {}
        self._channel_lock = channel_lock
        self._raw_connection = raw_connection
        self._publisher = publisher

    async def ensure_queue(self, queue: str) -> None:
        """Declare `queue` (work queue, DLQ, binding) unless this process already did."""
        if queue in self.declared:
            return
        check_queue_name(queue)
        if self.channel is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}; call connect()")
        with map_errors(self.url, f"declaring queue {queue!r}"):
            await self._declare_shielded(self.channel, queue, levels=False)
        self.declared.add(queue)
        # Name the queue in the catalog (once per process), so admins in other
        # processes find it; readers drop the duplicates.
        note = Outgoing("", CATALOG_QUEUE, queue.encode(), persistent(), needs=None)
        await self._publisher().publish_all([note], "recording the queue in the catalog")

    async def ensure_levels(self, queue: str) -> None:
        """Declare `queue` and its delay levels unless this process already did."""
        if queue in self.laddered:
            return
        await self.ensure_queue(queue)
        if self.channel is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}; call connect()")
        with map_errors(self.url, f"declaring the delay levels of queue {queue!r}"):
            await self._declare_shielded(self.channel, queue, levels=True)
        self.laddered.add(queue)

    async def redeclare(self, needs: set[str | None]) -> None:
        """Declare the ladder and the queues of `needs` again (a publish found them gone)."""
        if self.channel is None:
            return
        with map_errors(self.url, "re-declaring the topology"):
            await declare_ladder(await self.channel.get_underlay_channel())
        for queue in needs:
            if queue is not None:
                self.declared.discard(queue)
                self.laddered.discard(queue)
                await self.ensure_levels(queue)

    async def _declare_shielded(
        self, declarer: AbstractRobustChannel, queue: str, *, levels: bool
    ) -> None:
        # A declaration cancelled mid-RPC makes aiormq close the channel (its
        # replies would no longer line up), and every later declaration fails
        # until aio-pika reopens it. So a cancelled caller (a receive cut short)
        # leaves the declaration running; concurrent callers share it.
        key = (queue, levels)
        task = self._declaring.get(key)
        if task is None:
            task = asyncio.create_task(self._declare_queue(declarer, queue, levels=levels))
            self._declaring[key] = task
            task.add_done_callback(self._declared_one)
        await asyncio.shield(task)

    def _declared_one(self, task: asyncio.Task[None]) -> None:
        for key, known in list(self._declaring.items()):
            if known is task:
                del self._declaring[key]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that still wait re-raise it

    async def _declare_queue(
        self, declarer: AbstractRobustChannel, queue: str, *, levels: bool = False
    ) -> None:
        quorum = self.options.queue_type == "quorum"
        limit = self.options.delivery_limit

        async def declare(raw: RawChannel) -> None:
            if levels:
                await declare_levels(raw, queue)
            else:
                await declare_queue(raw, queue, quorum=quorum, delivery_limit=limit)

        try:
            await declare(await declarer.get_underlay_channel())
        except (ChannelNotFoundEntity, ChannelInvalidStateError):
            # A shared exchange deleted by hand: the 404 closed the declaring
            # channel (seen as the 404, or, when it came between pipelined
            # declarations, as a write to a closed channel), and aio-pika
            # reopens it in its own time. Re-declare everything on a channel
            # of our own, under the lock (see admin); an error that is not
            # about a missing exchange comes back from there.
            async with self._channel_lock:
                channel = await self._raw_connection().channel(publisher_confirms=False)
            try:
                await declare_ladder(channel)
                await declare(channel)
            finally:
                if not channel.is_closed:
                    await channel.close()
