"""The waiting-jobs script: RECEIVE's order and skips, read-only, and its cursors.

The conformance class proves the contract; these look at what it cannot
see: expired leases and due delayed jobs in RECEIVE's order, stale ids in
the ready list, the re-anchored cursor and the scan budget.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from upnext.broker.cursor import key_cursor
from upnext.broker.protocol import Envelope
from upnext.errors import ConfigurationError
from upnext_redis import RedisBroker
from upnext_redis.keys import KeySpace, QueueKeys


def _keys(prefix: str, queue: str = "q") -> QueueKeys:
    return KeySpace(prefix).queue(queue)


async def _ids(broker: RedisBroker, *, scheduled: bool = False, limit: int = 100) -> list[str]:
    """Every waiting job's id, following cursors."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await broker.waiting_jobs("q", scheduled=scheduled, limit=limit, cursor=cursor)
        ids += [job.id for job in page.jobs]
        if (cursor := page.cursor) is None:
            return ids


async def _snapshot(raw: aioredis.Redis, keys: QueueKeys) -> list[object]:
    ready, delayed, leased, _, _, token, *_ = keys.group
    return [
        await raw.lrange(ready, 0, -1),
        await raw.zrange(delayed, 0, -1, withscores=True),
        await raw.zrange(leased, 0, -1, withscores=True),
        await raw.hgetall(token),
    ]


async def test_ready_jobs_are_listed_in_receive_order_without_a_write(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """Expired leases, the ready list and due delayed jobs: listed as RECEIVE hands them out."""
    await redis_broker.enqueue_many([Envelope("h1", "q", b"x"), Envelope("h2", "q", b"x")])
    assert len(await redis_broker.receive(["q"], limit=2, lease=0.1, wait=1.0)) == 2
    await redis_broker.enqueue_many(
        [Envelope("a", "q", b"x"), Envelope("b", "q", b"x"), Envelope("c", "q", b"x", 0.1)]
    )
    await asyncio.sleep(0.3)
    before = await _snapshot(raw_redis, _keys(key_prefix))
    listed = await _ids(redis_broker, limit=2)
    assert await _snapshot(raw_redis, _keys(key_prefix)) == before, "listing writes nothing"
    got = await redis_broker.receive(["q"], limit=10, lease=30.0, wait=1.0)
    assert listed == [d.envelope.id for d in got]
    assert sorted(listed) == ["a", "b", "c", "h1", "h2"]


async def test_stale_ids_in_the_ready_list_are_skipped(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    """An id without a body, one held now, or one seen before is skipped, as RECEIVE does.

    A repeated id is skipped within a page only: across pages it would take a
    scan of the list (only a replay of a dead letter whose job id is queued
    again repeats one, and RECEIVE hands it out once).
    """
    await redis_broker.enqueue_many([Envelope("held", "q", b"x")])
    await redis_broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
    await redis_broker.enqueue_many([Envelope(i, "q", b"x") for i in "abc"])
    ready = _keys(key_prefix).group[0]
    await raw_redis.lpush(ready, "held", "ghost")
    assert await _ids(redis_broker, limit=1) == ["a", "b", "c"]
    await raw_redis.rpush(ready, "a")
    assert await _ids(redis_broker, limit=10) == ["a", "b", "c"]
    got = await redis_broker.receive(["q"], limit=10, lease=30.0, wait=1.0)
    assert [d.envelope.id for d in got] == ["a", "b", "c"]


async def test_a_ready_cursor_follows_its_job_when_the_head_is_taken(
    redis_broker: RedisBroker,
) -> None:
    """Jobs taken from the head between two pages shift nothing: the next page starts after."""
    await redis_broker.enqueue_many([Envelope(f"j{i}", "q", b"x") for i in range(6)])
    first = await redis_broker.waiting_jobs("q", scheduled=False, limit=2)
    assert [j.id for j in first.jobs] == ["j0", "j1"]
    [taken] = await redis_broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
    assert taken.envelope.id == "j0"
    second = await redis_broker.waiting_jobs("q", scheduled=False, limit=2, cursor=first.cursor)
    assert [j.id for j in second.jobs] == ["j2", "j3"]


async def test_a_scheduled_cursor_outlives_its_job_and_orders_ties_by_id(
    redis_broker: RedisBroker,
) -> None:
    """Jobs due in the same millisecond page by id; a cancelled last job still continues."""
    await redis_broker.enqueue_many([Envelope(f"t{i}", "q", b"x", 600.0) for i in (3, 1, 2, 0)])
    await redis_broker.enqueue_many([Envelope("later", "q", b"x", 700.0)])
    assert await _ids(redis_broker, scheduled=True, limit=1) == ["t0", "t1", "t2", "t3", "later"]
    first = await redis_broker.waiting_jobs("q", scheduled=True, limit=2)
    assert await redis_broker.cancel("q", "t1")
    rest = await redis_broker.waiting_jobs("q", scheduled=True, limit=10, cursor=first.cursor)
    # The anchor is gone: the page starts at its due time, so t0 may show again.
    assert [j.id for j in rest.jobs] == ["t0", "t2", "t3", "later"]


@pytest.mark.parametrize("scheduled", [False, True])
async def test_a_run_of_stale_ids_ends_a_page_early_with_a_cursor(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis, key_prefix: str, scheduled: bool
) -> None:
    """One script scans at most 10 * limit + 1000 ids; the cursor carries on past them."""
    ready, delayed, *_ = _keys(key_prefix).group
    if scheduled:
        seconds, _ = await raw_redis.time()
        due = (seconds + 300) * 1000  # before x's
        await raw_redis.zadd(delayed, {f"ghost{i}": due for i in range(1200)})
        await redis_broker.enqueue_many([Envelope("x", "q", b"x", 600.0)])
    else:
        await raw_redis.rpush(ready, *(f"ghost{i}" for i in range(1200)))
        await redis_broker.enqueue_many([Envelope("x", "q", b"x")])
    first = await redis_broker.waiting_jobs("q", scheduled=scheduled, limit=1)
    assert (first.jobs, first.cursor is not None) == ([], True)
    second = await redis_broker.waiting_jobs("q", scheduled=scheduled, limit=1, cursor=first.cursor)
    assert ([j.id for j in second.jobs], second.cursor) == (["x"], None)


@pytest.mark.parametrize(
    ("cursor", "scheduled"),
    [
        (key_cursor("wr1.", [0, 0, ""]), True),  # a ready cursor for a scheduled page
        (key_cursor("ws1.", [5, "a"]), False),
        (key_cursor("wr1.", [3, 0, ""]), False),  # no segment 3
        (key_cursor("wr1.", [0, -1, ""]), False),
        (key_cursor("wr1.", [0, 2**53, ""]), False),
    ],
)
async def test_cursors_of_another_kind_or_out_of_range_are_refused(
    redis_broker: RedisBroker, cursor: str, scheduled: bool
) -> None:
    with pytest.raises(ConfigurationError, match="malformed waiting-jobs cursor"):
        await redis_broker.waiting_jobs("q", scheduled=scheduled, limit=1, cursor=cursor)
