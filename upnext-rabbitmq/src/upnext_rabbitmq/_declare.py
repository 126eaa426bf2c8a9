"""Idempotent declarations of the topology described in `topology`."""

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
    level_bindings,
    level_exchange,
    level_queue,
    level_queue_arguments,
    work_queue,
    work_queue_arguments,
)

__all__ = ["declare_ladder", "declare_queue"]


async def declare_ladder(channel: RawChannel) -> None:
    """Declare the delay ladder, its deliver exchange, the unroutable sink and catalog."""
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
    # Lowest level first, so every level dead-letters into an exchange that exists.
    for level in range(LEVELS):
        exchange = level_exchange(level)
        await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(
            level_queue(level), durable=True, arguments=level_queue_arguments(level)
        )
        (hold_pattern, queue), (pass_pattern, onward) = level_bindings(level)
        await channel.queue_bind(queue, exchange, routing_key=hold_pattern)
        await channel.exchange_bind(onward, exchange, routing_key=pass_pattern)


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
