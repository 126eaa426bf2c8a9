"""Every exchange, queue, routing key and argument upnext declares on RabbitMQ.

Per upnext queue ``Q``::

    upnext.q.Q      durable work queue; x-dead-letter-exchange "" ->
                    upnext.dlq.Q (a backstop for broker-side dead letters)
    upnext.dlq.Q    durable dead-letter queue: core's records, and the backstop's
    upnext.ladder.K.Q  (K = 0..24) durable delay queue of Q's scheduled jobs,
                    x-message-ttl = 250 ms * 2**K; dead-letters into exchange
                    upnext.ladder.(K-1), level 0 into upnext.delay.deliver;
                    declared when a process starts consuming Q or
                    publishes its first delayed job of Q

Shared, permanent (never ``x-expires``: publishing does not count as use, and an
expired delay queue would take its messages with it)::

    upnext.ladder.K  (K = 0..24) topic exchange of delay level K: a 1 in digit
                    K goes to Q's level-K queue, a 0 on to upnext.ladder.(K-1)
                    (after level 0, to upnext.delay.deliver)
    upnext.delay.deliver  topic exchange: "<bits>.Q" -> upnext.q.Q; its
                    alternate-exchange upnext.unroutable keeps what no work
                    queue takes (a work queue deleted by hand)
    upnext.catalog  durable queue naming every upnext queue ever declared

A delay is rounded up to 250 ms quanta; the quanta count's binary digits, most
significant first, form the first words of the routing key, the upnext queue
name the rest. A message enters the exchange of its highest set bit and passes
each level: the exchange of level K routes a 1 in its digit to queue K of the
message's upnext queue (which holds it for 2**K quanta) and a 0 straight on to
level K-1. One TTL per queue, so no message ever waits behind a longer one (the
scheme of Celery 5.5 and NServiceBus). The exchanges are shared; the level
queues belong to one upnext queue each, so `purge` can empty them and `stats`
can count them. RabbitMQ caps x-message-ttl at 2**32-1 ms, hence 25 levels and
a longest delay of about 97 days.

(Versions before the per-queue levels used exchanges and shared queues named
``upnext.delay.K``; messages still in them finish their delay and reach the
deliver exchange as before. Nothing new is routed there.)
"""

from __future__ import annotations

import math
from typing import Any

from upnext.errors import BrokerError

__all__ = [
    "CATALOG_QUEUE",
    "DEAD_PREFIX",
    "DELIVER_EXCHANGE",
    "HANDED_OUT_HEADER",
    "LEVELS",
    "LEVEL_PREFIX",
    "MAX_DELAY",
    "PREFIX",
    "QUANTUM",
    "REPLY_QUEUE_EXPIRES_MS",
    "UNROUTABLE_EXCHANGE",
    "UNROUTABLE_QUEUE",
    "WORK_PREFIX",
    "amqp_queues",
    "check_queue_name",
    "delay_route",
    "deliver_binding",
    "dlq_queue",
    "level_exchange",
    "level_hold_binding",
    "level_pass_binding",
    "level_queue",
    "level_queue_arguments",
    "quanta",
    "reply_queue",
    "work_queue",
    "work_queue_arguments",
]

PREFIX = "upnext"
QUANTUM = 0.25
LEVELS = 25
MAX_DELAY = QUANTUM * (2**LEVELS - 1)
DELIVER_EXCHANGE = f"{PREFIX}.delay.deliver"
UNROUTABLE_EXCHANGE = f"{PREFIX}.unroutable"
UNROUTABLE_QUEUE = f"{PREFIX}.unroutable"
CATALOG_QUEUE = f"{PREFIX}.catalog"
WORK_PREFIX, DEAD_PREFIX, LEVEL_PREFIX = f"{PREFIX}.q.", f"{PREFIX}.dlq.", f"{PREFIX}.ladder."
# Header of a job given back (Release, prefetch give-back): how many hand-outs
# before the one given back ended unsettled, so the copy is still a redelivery.
HANDED_OUT_HEADER = f"x-{PREFIX}-handed-out"
# A reply queue outlives a reconnect but not an hour without its process.
REPLY_QUEUE_EXPIRES_MS = 3_600_000
# Routing keys are at most 255 bytes: the digits take 2 * LEVELS of them.
_MAX_NAME_BYTES = 255 - 2 * LEVELS - len(f"{PREFIX}.dlq.")


def check_queue_name(queue: str) -> str:
    """`queue` if it can name an upnext queue on RabbitMQ, else BrokerError."""
    size = len(queue.encode())
    if not queue or size > _MAX_NAME_BYTES:
        raise BrokerError(f"queue name must be 1..{_MAX_NAME_BYTES} bytes, got {size}")
    if any(word in ("*", "#") for word in queue.split(".")):
        raise BrokerError(f"queue name {queue!r} has a topic wildcard word ('*' or '#')")
    return queue


def work_queue(queue: str) -> str:
    """The AMQP queue holding the ready jobs of upnext queue `queue`."""
    return f"{WORK_PREFIX}{queue}"


def dlq_queue(queue: str) -> str:
    """The AMQP queue holding the dead letters of upnext queue `queue`."""
    return f"{DEAD_PREFIX}{queue}"


def reply_queue(token: str) -> str:
    """The reply queue of one process (`token` is unique per process)."""
    return f"{PREFIX}.reply.{token}"


def work_queue_arguments(
    queue: str, *, quorum: bool = False, delivery_limit: int = 5
) -> dict[str, Any]:
    """Arguments of a work queue: its DLQ as dead-letter target, maybe quorum."""
    args: dict[str, Any] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq_queue(queue),
    }
    if quorum:
        args["x-queue-type"] = "quorum"
        args["x-delivery-limit"] = delivery_limit
    return args


def level_exchange(level: int) -> str:
    """The topic exchange of delay level `level` (shared by every upnext queue)."""
    return f"{PREFIX}.ladder.{level}"


def level_queue(queue: str, level: int) -> str:
    """The TTL queue of delay level `level` of upnext queue `queue`."""
    return f"{LEVEL_PREFIX}{level}.{queue}"


def level_queue_arguments(level: int) -> dict[str, Any]:
    """Arguments of a level queue: its TTL and where it dead-letters to."""
    target = level_exchange(level - 1) if level > 0 else DELIVER_EXCHANGE
    return {"x-message-ttl": int(QUANTUM * 1000) << level, "x-dead-letter-exchange": target}


def _digit_pattern(level: int, digit: str) -> str:
    # Digits are written most significant first: level K is word LEVELS-1-K.
    return "*." * (LEVELS - 1 - level) + digit + ".#"


def level_hold_binding(queue: str, level: int) -> str:
    """The pattern binding `queue`'s level queue to the level's exchange (digit 1)."""
    return "*." * (LEVELS - 1 - level) + "1." + "*." * level + queue


def level_pass_binding(level: int) -> tuple[str, str]:
    """(pattern, next exchange): a 0 in the level's digit passes the level by."""
    onward = level_exchange(level - 1) if level > 0 else DELIVER_EXCHANGE
    return _digit_pattern(level, "0"), onward


def amqp_queues(queue: str) -> list[str]:
    """Every AMQP queue that belongs to upnext queue `queue` (levels top down)."""
    levels = [level_queue(queue, k) for k in reversed(range(LEVELS))]
    return [*levels, work_queue(queue), dlq_queue(queue)]


def deliver_binding(queue: str) -> str:
    """The pattern binding `queue`'s work queue to the deliver exchange."""
    return "*." * LEVELS + queue


def quanta(delay: float) -> int:
    """`delay` in whole 250 ms quanta, rounded up (0 for no delay); BrokerError for NaN/Infinity."""
    if not math.isfinite(delay):
        raise BrokerError(f"delay {delay!r} s is not a duration RabbitMQ can hold")
    if delay <= 0:
        return 0
    # The small epsilon keeps 0.5 from becoming 3 quanta through float noise.
    return math.ceil(delay / QUANTUM - 1e-9)


def delay_route(queue: str, delay: float) -> tuple[str, str] | None:
    """(exchange, routing key) that holds a job for `delay` s, or None if due now."""
    count = quanta(delay)
    if count == 0:
        return None
    if count >= 2**LEVELS:
        raise BrokerError(f"delay {delay:.0f} s exceeds RabbitMQ's longest, {MAX_DELAY:.0f} s")
    digits = ".".join(format(count, f"0{LEVELS}b"))
    return level_exchange(count.bit_length() - 1), f"{digits}.{queue}"
