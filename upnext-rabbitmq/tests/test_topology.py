"""The delay ladder's routing arithmetic and the arguments declared on the server."""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from upnext.errors import BrokerError
from upnext_rabbitmq import RabbitBroker, topology
from upnext_rabbitmq.topology import (
    LEVELS,
    delay_route,
    level_exchange,
    level_hold_binding,
    level_pass_binding,
    level_queue_arguments,
    quanta,
)
from upnext_rabbitmq.topology import work_queue_arguments as wq_args


def _matches(pattern: str, key: str) -> bool:
    """AMQP topic matching ('*' one word, '#' zero or more), for the ladder's patterns."""
    words, parts = key.split("."), pattern.split(".")
    if parts and parts[-1] == "#":
        parts = parts[:-1]
        return len(words) >= len(parts) and all(
            p in ("*", w) for p, w in zip(parts, words, strict=False)
        )
    return len(words) == len(parts) and all(
        p in ("*", w) for p, w in zip(parts, words, strict=True)
    )


def _levels_passed(queue: str, delay: float) -> list[int]:
    """Walk a message through the ladder's bindings; the levels whose queue holds it."""
    route = delay_route(queue, delay)
    assert route is not None
    exchange, key = route
    held: list[int] = []
    while exchange != topology.DELIVER_EXCHANGE:
        level = int(exchange.rsplit(".", 1)[1])
        hold = level_hold_binding(queue, level)
        skip, onward = level_pass_binding(level)
        assert _matches(hold, key) != _matches(skip, key), "exactly one binding must match"
        if _matches(hold, key):
            held.append(level)
        exchange = onward
    assert _matches(topology.deliver_binding(queue), key)
    return held


@pytest.mark.parametrize(
    ("delay", "levels"),
    [
        (0.25, [0]),
        (0.3, [1]),
        (1.0, [2]),
        (1.25, [2, 0]),
        (30.0, [6, 5, 4, 3]),
        (60.0, [7, 6, 5, 4]),
    ],
)
def test_a_delay_passes_the_levels_of_its_set_bits(delay: float, levels: list[int]) -> None:
    """A delay rounded up to 250 ms quanta is held by exactly the levels of its set bits."""
    assert _levels_passed("orders", delay) == levels
    held = sum(250 * 2**k for k in levels) / 1000
    assert delay <= held < delay + 0.25


def test_no_delay_goes_straight_to_the_work_queue() -> None:
    """A job due now skips the ladder; quanta round up, never down."""
    assert delay_route("orders", 0.0) is None
    assert (quanta(0.5), quanta(0.51), quanta(1e-6)) == (2, 3, 1)


def test_deliver_binding_does_not_confuse_dotted_names() -> None:
    """Queue 'b' does not receive the delayed jobs of queue 'a.b' (exact word count)."""
    route = delay_route("a.b", 1.0)
    assert route is not None
    assert _matches(topology.deliver_binding("a.b"), route[1])
    assert not _matches(topology.deliver_binding("b"), route[1])
    exchange, key = route
    level = int(exchange.rsplit(".", 1)[1])
    assert _matches(level_hold_binding("a.b", level), key)
    assert not _matches(level_hold_binding("b", level), key)
    assert not _matches(level_hold_binding("a", level), key)


def test_limits_are_refused() -> None:
    """Delays past the ladder's top and names with wildcard words raise BrokerError."""
    with pytest.raises(BrokerError, match="exceeds"):
        delay_route("q", topology.MAX_DELAY + 1)
    for bad in ("", "a.*.b", "#", "x" * 300):
        with pytest.raises(BrokerError):
            topology.check_queue_name(bad)


def test_level_ttls_fit_rabbitmq() -> None:
    """Level k holds 250 ms * 2**k, the top fits under RabbitMQ's 2**32-1 ms cap."""
    assert [level_queue_arguments(k)["x-message-ttl"] for k in (0, 1, 10)] == [250, 500, 256000]
    assert level_queue_arguments(LEVELS - 1)["x-message-ttl"] < 2**32
    assert level_queue_arguments(0)["x-dead-letter-exchange"] == topology.DELIVER_EXCHANGE
    assert level_queue_arguments(5)["x-dead-letter-exchange"] == level_exchange(4)


async def _redeclare_fails(url: str, name: str, arguments: dict[str, Any]) -> bool:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except ChannelPreconditionFailed:
            return True
        return False
    finally:
        await connection.close()


async def test_server_holds_the_declared_arguments(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str
) -> None:
    """The delay levels and work queue exist with exactly topology's arguments (no others)."""
    await broker.enqueue_many([])
    await broker._ensure_levels(upnext_queue)
    for level in (0, 7, LEVELS - 1):
        name = topology.level_queue(upnext_queue, level)
        assert not await _redeclare_fails(amqp_url, name, level_queue_arguments(level))
        assert await _redeclare_fails(
            amqp_url, name, {**level_queue_arguments(level), "x-expires": 10**9}
        )
    work = topology.work_queue(upnext_queue)
    assert not await _redeclare_fails(amqp_url, work, wq_args(upnext_queue))
    assert await _redeclare_fails(amqp_url, work, {})
