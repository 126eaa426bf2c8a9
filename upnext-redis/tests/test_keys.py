"""Key layout: one hash tag per queue, nothing left behind, due times from Redis TIME."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from upnext.broker.protocol import (
    Ack,
    DeadLetter,
    DeadLetterRecord,
    Envelope,
    Release,
    ResultWrite,
    SettleItem,
)
from upnext.errors import ConfigurationError
from upnext_redis import RedisBroker
from upnext_redis.keys import KeySpace


async def _keys(client: aioredis.Redis, prefix: str) -> set[str]:
    return {k.decode() async for k in client.scan_iter(match=f"{prefix}:*", count=1000)}


async def _drain_and_ack(broker: RedisBroker, queue: str, count: int, ttl: float) -> None:
    done = 0
    while done < count:
        got = await broker.receive([queue], limit=500, lease=30.0, wait=1.0)
        assert got, "every enqueued job must be handed out"
        writes = [Ack(d, ResultWrite(d.envelope.id, queue, b"ok", ttl)) for d in got]
        assert await broker.settle(writes) == [None] * len(got)
        done += len(got)


async def test_every_key_of_a_queue_shares_its_hash_tag(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """Jobs, leases, delays, dead letters and results of a queue all hash to one slot."""
    queue = "orders"
    await redis_broker.enqueue_many(
        [Envelope(f"j{i}", queue, b"x") for i in range(3)] + [Envelope("late", queue, b"x", 60)]
    )
    held = await redis_broker.receive([queue], limit=3, lease=30.0, wait=1.0)
    record = DeadLetterRecord("e1", held[1].envelope.id, queue, "f", "r", time.time(), b"d")
    await redis_broker.settle(
        [
            Ack(held[0], ResultWrite(held[0].envelope.id, queue, b"r", 60)),
            DeadLetter(held[1], record),
        ]
    )
    keys = await _keys(raw_redis, key_prefix) - {f"{key_prefix}:queues"}
    assert len(keys) >= 9, f"expected the queue's structures, found {sorted(keys)}"
    assert all(f":{{{queue}}}:" in key for key in keys), sorted(keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1, "one queue, one cluster slot"


async def test_completed_jobs_leave_only_their_results(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """After 1,000 acked jobs the only keys besides results are a fixed handful."""
    queue = "bulk"
    await redis_broker.enqueue_many([Envelope(f"j{i}", queue, b"x" * 64) for i in range(1000)])
    await _drain_and_ack(redis_broker, queue, 1000, ttl=60.0)
    keys = await _keys(raw_redis, key_prefix)
    results = {k for k in keys if ":result:" in k}
    assert len(results) == 1000
    base = f"{key_prefix}:{{{queue}}}:"
    assert keys - results == {f"{key_prefix}:queues", f"{base}wake", f"{base}seq"}
    assert await raw_redis.pttl(next(iter(results))) > 0, "results carry a TTL"


async def test_a_priority_is_kept_only_while_its_job_lives(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """Priority 0 stores nothing; a set one goes with its job: ack, dead letter, cancel, purge."""
    prio = KeySpace(key_prefix).queue("q").group[11]
    await redis_broker.enqueue_many([Envelope("plain", "q", b"x")])
    assert not await raw_redis.exists(prio), "priority 0 is not stored"
    await redis_broker.enqueue_many([Envelope(f"p{i}", "q", b"x", 0.0, 5) for i in range(4)])
    assert await raw_redis.hlen(prio) == 4
    assert await redis_broker.cancel("q", "p0")
    held = {d.envelope.id: d for d in await redis_broker.receive(["q"], limit=9, lease=30, wait=1)}
    assert sorted(held) == ["p1", "p2", "p3", "plain"]
    record = DeadLetterRecord("e1", "p2", "q", "f", "r", time.time(), b"d")
    items: list[SettleItem] = [Ack(held["p1"]), Ack(held["plain"]), Release(held["p3"])]
    assert await redis_broker.settle([*items, DeadLetter(held["p2"], record)]) == [None] * 4
    assert await raw_redis.hkeys(prio) == [b"p3"], "a released job keeps its priority"
    assert await redis_broker.purge("q") == 1
    assert not await raw_redis.exists(prio), "no priority outlives its job"


async def test_results_with_zero_ttl_store_nothing(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """result_ttl 0 means no key at all, so nothing is left behind."""
    await redis_broker.enqueue_many([Envelope(f"j{i}", "q", b"x") for i in range(10)])
    await _drain_and_ack(redis_broker, "q", 10, ttl=0.0)
    assert not {k for k in await _keys(raw_redis, key_prefix) if ":result:" in k}


async def test_due_time_comes_from_redis_clock(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """A delayed job is scored by Redis TIME + delay, not by the producer's clock."""
    seconds, micros = await raw_redis.time()
    await redis_broker.enqueue_many([Envelope("d", "q", b"x", delay=30.0)])
    score = await raw_redis.zscore(KeySpace(key_prefix).queue("q").group[1], "d")
    server_ms = seconds * 1000 + micros // 1000
    assert score is not None
    assert 0 <= score - (server_ms + 30_000) < 1_000


def test_prefix_with_braces_is_refused() -> None:
    """A brace in the prefix would change the hash tag; it is a configuration error."""
    with pytest.raises(ConfigurationError):
        KeySpace("bad{prefix}")
