"""State store internals the conformance suite cannot see: indexes, versions, key slots."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager

import redis.asyncio as aioredis
from redis.crc import key_slot
from upnext.broker.state import StateWrite
from upnext_redis import RedisBroker
from upnext_redis.keys import STATE_BUCKETS, KeySpace


async def test_expired_keys_left_in_the_index_are_not_listed_and_get_cleaned(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """Redis drops an expired entry; its index members stay until a scan passes them."""
    group = KeySpace(key_prefix).state_scope("q")
    await redis_broker.state_put([StateWrite(f"k{i}", b"x", 0.05) for i in range(5)], scope="q")
    await asyncio.sleep(0.15)
    assert await raw_redis.zcard(group.index) == 5, "nothing has reclaimed the index yet"
    page = await redis_broker.state_scan("k", scope="q")
    assert page.entries == [], "an expired entry must never be listed"
    assert await raw_redis.zcard(group.index) == 0, "the scan removes the stale members"
    assert await raw_redis.zcard(group.expiries) == 0


async def test_a_write_reaps_expired_keys_from_the_indexes(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """Keys that are never scanned do not pile up: each write reaps expired ones."""
    group = KeySpace(key_prefix).state_scope("q")
    await redis_broker.state_put([StateWrite(f"k{i}", b"x", 0.05) for i in range(20)], scope="q")
    await asyncio.sleep(0.15)
    await redis_broker.state_put([StateWrite("fresh", b"y", 60.0)], scope="q")
    assert await raw_redis.zrange(group.index, 0, -1) == [b"fresh"]
    assert await raw_redis.zrange(group.expiries, 0, -1) == [b"fresh"]


async def test_a_write_without_ttl_leaves_the_expiry_index(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """An entry made permanent has no PEXPIRE and is no longer due for reaping."""
    group = KeySpace(key_prefix).state_scope("q")
    await redis_broker.state_put([StateWrite("k", b"x", 60.0)], scope="q")
    assert 0 < await raw_redis.pttl(group.entry("k")) <= 60_000
    await redis_broker.state_put([StateWrite("k", b"y", None)], scope="q")
    assert await raw_redis.pttl(group.entry("k")) == -1
    assert await raw_redis.zcard(group.expiries) == 0


async def test_versions_rise_past_the_groups_highest_even_if_the_clock_is_behind(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """A group's highest version, ahead of Redis TIME (a clock stepped back), still rises."""
    group = KeySpace(key_prefix).state_scope("q")
    ahead = 2**52  # microseconds: well past any clock
    await raw_redis.set(group.version, ahead)
    seen = []
    for value in (b"a", None, b"b"):
        await redis_broker.state_put([StateWrite("k", value, 60.0)], scope="q")
        (entry,) = await redis_broker.state_get(["k"], scope="q")
        if entry is not None:
            seen.append(entry.version)
    assert seen == [ahead + 1, ahead + 2], "recreated after a delete, a key gets a new version"


async def test_scoped_state_shares_its_queue_slot_and_unscoped_state_spreads(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """A scope's keys hash with its queue; unscoped keys fill the buckets, each one slot."""
    await redis_broker.state_put([StateWrite("k", b"x", 60.0)], scope="orders")
    await redis_broker.slots_acquire("s", "m", limit=1, ttl=60.0, scope="orders")
    await redis_broker.state_put([StateWrite(f"u{i}", b"x", 60.0) for i in range(200)])
    keys = [k.decode() async for k in raw_redis.scan_iter(match=f"{key_prefix}:*", count=1000)]
    queue_slot = key_slot(KeySpace(key_prefix).queue("orders").wake.encode())
    scoped = [k for k in keys if "{orders}" in k]
    assert len(scoped) == 5, sorted(scoped)  # idx, ttl, ver, the entry, the slot set
    assert {key_slot(k.encode()) for k in scoped} == {queue_slot}
    buckets = {k.split("{")[1].split("}")[0] for k in keys if k not in scoped}
    assert buckets == {str(n) for n in range(STATE_BUCKETS)}


async def test_a_slot_set_expires_with_its_last_member(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """An abandoned slot set does not outlive its members: it carries their latest expiry."""
    slots = KeySpace(key_prefix).state("k", None).slots("k")
    await redis_broker.slots_acquire("k", "a", limit=None, ttl=1.0)
    await redis_broker.slots_acquire("k", "b", limit=None, ttl=30.0)
    assert 29_000 < await raw_redis.pttl(slots) <= 30_002
    await redis_broker.slots_release("k", ["a", "b"])
    assert not await raw_redis.exists(slots), "a set with no member left is gone"


async def test_reaping_keeps_a_live_entry_listed(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """An entry due in the expiry index but still alive (its ttl moved) stays scannable."""
    group = KeySpace(key_prefix).state_scope("q")
    await redis_broker.state_put(
        [StateWrite("later", b"x", 60.0), StateWrite("kept", b"y", 60.0)], scope="q"
    )
    await raw_redis.pexpire(group.entry("later"), 120_000)
    await raw_redis.persist(group.entry("kept"))
    await raw_redis.zadd(group.expiries, {"later": 0, "kept": 0})  # as if both were due
    await redis_broker.state_put([StateWrite("other", b"z", 60.0)], scope="q")
    page = await redis_broker.state_scan("", scope="q")
    assert [k for k, _ in page.entries] == ["kept", "later", "other"]
    assert await raw_redis.zscore(group.expiries, "later") is not None, "re-scored, not dropped"
    assert await raw_redis.zscore(group.expiries, "kept") is None, "no ttl: not due at all"


async def test_every_state_call_is_one_round_trip(
    private_redis: Callable[..., AbstractContextManager[int]], sends: list[bytes]
) -> None:
    """Scripts are loaded on connect; each call, over any number of buckets, is one write."""
    with private_redis() as port:  # a server whose script cache starts empty
        async with RedisBroker.from_url(f"redis://127.0.0.1:{port}/0") as broker:
            sends.clear()
            keys = [f"k{i}" for i in range(16)]  # several buckets
            await broker.state_put([StateWrite(k, b"x", 60.0) for k in keys])
            await broker.state_get(keys)
            await broker.state_scan("k", limit=5)
            await broker.slots_acquire("s", "m", limit=1, ttl=60.0)
            await broker.slots_release("s", ["m"])
            assert len(sends) == 5, sends
