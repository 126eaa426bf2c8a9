"""What the conformance suite cannot see: batching, Lua details, wake-ups, reconnects."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from upnext.broker.cursor import dead_letter_page
from upnext.broker.protocol import (
    Ack,
    DeadLetter,
    DeadLetterRecord,
    Envelope,
    Release,
    ResultWrite,
)
from upnext.errors import LeaseLost
from upnext.testing import Timing
from upnext_redis import RedisBroker
from upnext_redis.keys import KeySpace


async def test_each_batch_operation_is_one_round_trip(
    redis_broker: RedisBroker, sends: list[bytes]
) -> None:
    """enqueue, receive, extend and settle of 2,500 jobs (several scripts) are one write each."""
    count = 2_500
    await redis_broker.enqueue_many([Envelope(f"j{i}", "q", b"x") for i in range(count)])
    got = await redis_broker.receive(["q"], limit=count, lease=30.0, wait=1.0)
    assert len(got) == count
    assert await redis_broker.extend(got, lease=30.0) == [None] * count
    assert await redis_broker.settle([Ack(d) for d in got]) == [None] * count
    assert len(sends) == 4, [s[:60] for s in sends]
    assert await redis_broker.receive(["q"], limit=1, lease=30.0, wait=0) == []


async def test_a_job_named_twice_in_one_settle_is_settled_once(
    redis_broker: RedisBroker,
) -> None:
    """The first item for a delivery wins; a second one in the same batch is LeaseLost."""
    await redis_broker.enqueue_many([Envelope("j", "q", b"x")])
    (held,) = await redis_broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
    outcomes = await redis_broker.settle([Ack(held), Release(held)])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], LeaseLost)
    assert await redis_broker.receive(["q"], limit=1, lease=30.0, wait=0.2) == []


async def test_blocked_receiver_does_not_poll(
    redis_broker: RedisBroker, sends: list[bytes]
) -> None:
    """An idle receive runs its script at start and at the end, blocking in between."""
    started = time.monotonic()
    assert await redis_broker.receive(["idle"], limit=10, lease=30.0, wait=1.0) == []
    assert time.monotonic() - started >= 0.95
    scripts = [s for s in sends if b"EVALSHA" in s]
    assert len(scripts) <= 2, f"{len(scripts)} script calls while idle"
    assert any(b"XREAD" in s for s in sends), "the receiver must block on XREAD"


async def test_raw_garbage_in_a_queue_is_delivered_as_is(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """A body written straight into the keys comes out byte for byte (core dead-letters it)."""
    keys = KeySpace(key_prefix).queue("q")
    garbage = b"\xff\xfe\x00not-json\x80"
    await raw_redis.hset(keys.group[3], "raw-1", garbage)
    await raw_redis.rpush(keys.group[0], "raw-1")
    await redis_broker.enqueue_many([Envelope("enq-1", "q", garbage)])
    got = await redis_broker.receive(["q"], limit=10, lease=30.0, wait=1.0)
    assert {(d.envelope.id, d.envelope.body) for d in got} == {
        ("raw-1", garbage),
        ("enq-1", garbage),
    }


async def test_stale_and_duplicate_ids_are_not_handed_out(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """An id without a body is dropped; an id listed twice (as the enqueue did
    before it kept ids unique) is handed out once."""
    keys = KeySpace(key_prefix).queue("q")
    await raw_redis.rpush(keys.group[0], "ghost")
    await redis_broker.enqueue_many([Envelope("twice", "q", b"a")])
    await raw_redis.rpush(keys.group[0], "twice")
    got = await redis_broker.receive(["q"], limit=10, lease=30.0, wait=1.0)
    assert [(d.envelope.id, d.envelope.body) for d in got] == [("twice", b"a")]
    assert await raw_redis.llen(keys.group[0]) == 0


async def test_a_known_id_is_stored_once(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """Enqueueing a queued id again (alone, or delayed in a batch) writes nothing."""
    keys = KeySpace(key_prefix).queue("q")
    await redis_broker.enqueue_many([Envelope("j", "q", b"a")])
    await redis_broker.enqueue_many([Envelope("j", "q", b"b")])
    await redis_broker.enqueue_many([Envelope("j", "q", b"c", 5.0), Envelope("k", "q", b"d")])
    assert await raw_redis.lrange(keys.group[0], 0, -1) == [b"j", b"k"]
    assert await raw_redis.zcard(keys.group[1]) == 0
    assert await raw_redis.hget(keys.group[3], "j") == b"a"


async def test_a_short_lease_wakes_a_receiver_blocked_before_it(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str, timing: Timing
) -> None:
    """A receiver blocked with a long wait still takes over a job whose short lease ran out."""
    other = asyncio.create_task(redis_broker.receive(["q"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(0.2)
    # Written behind the broker's back, so the blocked receiver is not woken by it.
    keys = KeySpace(key_prefix).queue("q")
    await raw_redis.hset(keys.group[3], "j", b"x")
    await raw_redis.rpush(keys.group[0], "j")
    started = time.monotonic()
    held = await redis_broker.receive(["q"], limit=1, lease=0.3, wait=1.0)
    assert [d.envelope.id for d in held] == ["j"]
    got = await asyncio.wait_for(other, 3.0)
    assert [d.envelope.id for d in got] == ["j"]
    assert got[0].redelivered
    assert time.monotonic() - started <= 0.3 + timing.tolerance(0.5)


async def test_dlq_ties_page_in_byte_order(redis_broker: RedisBroker) -> None:
    """Entries with one failed_at page by id exactly as Python orders the ids."""
    ids = ["a", "B", "b", "é", "zz", "z", "Ω", "0"]
    now = 1_700_000_000.125
    await redis_broker.enqueue_many([Envelope(f"j-{i}", "q", b"x") for i in ids])
    got = await redis_broker.receive(["q"], limit=20, lease=30.0, wait=1.0)
    items = [
        DeadLetter(d, DeadLetterRecord(d.envelope.id[2:], d.envelope.id, "q", "f", "r", now, b""))
        for d in got
    ]
    assert await redis_broker.settle(items) == [None] * len(ids)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await dead_letter_page(redis_broker, queue="q", limit=3, cursor=cursor)
        seen += [r.id for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(ids, reverse=True)


async def _kill_client(raw: aioredis.Redis, name: str) -> None:
    clients = await raw.client_list()
    ids = [c["id"] for c in clients if c.get("name") == name]
    assert ids, f"no connection named {name}"
    for client_id in ids:
        await raw.client_kill_filter(_id=client_id)


async def test_result_waiter_survives_a_lost_listener_connection(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, timing: Timing
) -> None:
    """The listener reconnects and re-subscribes; a waiter still gets its result."""
    waiter = asyncio.create_task(redis_broker.get_result("j", queue="q", wait=5.0))
    await asyncio.sleep(0.3)
    await _kill_client(raw_redis, f"{redis_broker._client.name}-results")
    await redis_broker.put_results([ResultWrite("j", "q", b"done", 60.0)])
    started = time.monotonic()
    assert await asyncio.wait_for(waiter, 5.0) == b"done"
    assert time.monotonic() - started < timing.tolerance(2.0)


async def test_blocked_receiver_survives_a_lost_connection(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis
) -> None:
    """Killing the blocking connection mid-wait: the receiver reconnects and is woken."""
    receiver = asyncio.create_task(redis_broker.receive(["q"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(0.3)
    await _kill_client(raw_redis, f"{redis_broker._client.name}-block")
    await asyncio.sleep(0.2)
    await redis_broker.enqueue_many([Envelope("j", "q", b"x")])
    got = await asyncio.wait_for(receiver, 5.0)
    assert [d.envelope.id for d in got] == ["j"]


async def test_cancel_leaves_no_stale_id(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """cancel removes the job from the ready list and the delayed set alike."""
    await redis_broker.enqueue_many([Envelope("now", "q", b"x"), Envelope("later", "q", b"x", 60)])
    assert await redis_broker.cancel("q", "now")
    assert await redis_broker.cancel("q", "later")
    assert not await redis_broker.cancel("q", "later")
    keys = KeySpace(key_prefix).queue("q")
    assert await raw_redis.exists(keys.group[0], keys.group[1], keys.group[3]) == 0


async def test_results_are_announced_on_their_own_channel(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """Ack with a result publishes on the job's channel, beside the queue's hash tag."""
    channel = KeySpace(key_prefix).queue("q").result_channel("j")
    pubsub = raw_redis.pubsub()
    await pubsub.subscribe(channel)
    await redis_broker.enqueue_many([Envelope("j", "q", b"x")])
    (held,) = await redis_broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
    await redis_broker.settle([Ack(held, ResultWrite("j", "q", b"r", 60.0))])
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
    await pubsub.aclose()
    assert message is not None
    assert message["channel"] == channel.encode()
