"""Idempotent declarations of the topology described in `topology`.

The ladder's 50 declarations (and a queue's 50 level declarations) are sent
with ``nowait`` and confirmed by one synchronous declaration after them: a
channel handles its methods in order, so that reply means every one before it
succeeded, and a failure closes the channel, which fails the last one. One
round trip instead of fifty, so a queue's first delayed job is not late.
"""

from __future__ import annotations

from aiormq.abc import AbstractChannel as RawChannel

from upnext_rabbitmq.topology import (
    CATALOG_QUEUE,
    DELIVER_EXCHANGE,
    LEVELS,
    UNROUTABLE_EXCHANGE,
    UNROUTABLE_QUEUE,
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

__all__ = ["declare_ladder", "declare_levels", "declare_queue"]


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
