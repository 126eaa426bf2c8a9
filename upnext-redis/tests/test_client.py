"""The command path on redis-py: lost scripts, lost connections, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis.asyncio as aioredis
from upnext.broker.protocol import Ack, Envelope
from upnext.errors import BrokerUnavailable
from upnext.testing import Timing
from upnext_redis import RedisBroker

Server = Callable[..., AbstractContextManager[int]]


async def test_lost_scripts_are_reloaded(private_redis: Server) -> None:
    """After SCRIPT FLUSH (or a restart) every operation reloads its script and works."""
    with private_redis() as port:
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{port}/0")
        await broker.connect()
        client = aioredis.Redis(port=port)
        try:
            await client.script_flush()
            await broker.enqueue_many([Envelope("j", "q", b"x")])
            await client.script_flush()
            (held,) = await broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
            await client.script_flush()
            assert await broker.settle([Ack(held)]) == [None]
        finally:
            await client.aclose()
            await broker.aclose()


async def test_a_killed_connection_is_replaced(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis
) -> None:
    """Commands after the server dropped our pooled connection reconnect and succeed."""
    await redis_broker.enqueue_many([Envelope("a", "q", b"x")])
    for client in await raw_redis.client_list():
        if client.get("name") == redis_broker._client.name:
            await raw_redis.client_kill_filter(_id=client["id"])
    await redis_broker.enqueue_many([Envelope("b", "q", b"x")])
    got = await redis_broker.receive(["q"], limit=2, lease=30.0, wait=1.0)
    assert sorted(d.envelope.id for d in got) == ["a", "b"]


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 4])
async def test_a_cancelled_call_is_cancelled_and_leaves_no_reply_behind(
    redis_broker: RedisBroker, steps: int
) -> None:
    """Cancelling at any point raises CancelledError; the next caller reads its own reply."""
    await redis_broker.enqueue_many([Envelope(f"j{i}", "q", b"x") for i in range(20)])
    task = asyncio.create_task(redis_broker.stats("q"))
    for _ in range(steps):
        await asyncio.sleep(0)
    if task.done():  # finished before we got to cancel it: nothing to check here
        await task
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for _ in range(3):
        stats = await redis_broker.stats("q")
        assert stats.ready == 20
    assert await redis_broker.cancel("q", "j1")


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.01, 0.2])
async def test_a_cancelled_receive_stops_at_once(
    redis_broker: RedisBroker, delay: float, timing: Timing
) -> None:
    """A receive blocked for work ends on cancel, whatever it was doing at that moment."""
    task = asyncio.create_task(redis_broker.receive(["idle"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(delay)
    task.cancel()
    started = asyncio.get_running_loop().time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.get_running_loop().time() - started < timing.tolerance(0.5)


async def test_a_woken_receive_gets_its_job_in_the_same_round_trip(
    redis_broker: RedisBroker, sends: list[bytes]
) -> None:
    """The block and the next RECEIVE go out in one write: the wake-up carries the job."""
    receiver = asyncio.create_task(redis_broker.receive(["q"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(0.2)
    await redis_broker.enqueue_many([Envelope("j", "q", b"x")])
    (got,) = await asyncio.wait_for(receiver, 5.0)
    assert got.envelope.id == "j"
    assert got.deliveries == 1
    blocks = [s for s in sends if b"XREAD" in s]
    assert blocks, "the receiver must block on XREAD"
    assert all(b"EVALSHA" in s for s in blocks), "XREAD must carry the RECEIVE"
    receives = [s for s in sends if b"EVALSHA" in s and b"XREAD" not in s and b"jobs" in s]
    # The initial take and the enqueue: nothing after the wake-up.
    assert len(receives) == 2, [s[:80] for s in receives]


async def test_a_cancelled_blocked_receive_frees_its_connection_at_once(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis
) -> None:
    """Cancel drops the blocking connection, which ends the block on the server too."""
    name = f"{redis_broker._client.name}-block"
    task = asyncio.create_task(redis_broker.receive(["idle"], limit=1, lease=30.0, wait=30.0))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        clients = [c for c in await raw_redis.client_list() if c.get("name") == name]
        if clients and all(c["cmd"] != "xread" or "b" not in c["flags"] for c in clients):
            break
        await asyncio.sleep(0.01)
    blocked = [c for c in clients if "b" in c["flags"]]
    assert not blocked, f"still blocked after cancel: {blocked}"
    # The connection went back to the wire and serves the next receive.
    await redis_broker.enqueue_many([Envelope("j", "idle", b"x")])
    (got,) = await redis_broker.receive(["idle"], limit=1, lease=30.0, wait=1.0)
    assert got.envelope.id == "j"
    assert got.deliveries == 1


async def test_a_blocked_receive_reloads_a_script_lost_while_it_waited(
    redis_broker: RedisBroker, raw_redis: aioredis.Redis
) -> None:
    """SCRIPT FLUSH during a block: the piggybacked RECEIVE fails NOSCRIPT and is rerun."""
    receiver = asyncio.create_task(redis_broker.receive(["q"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(0.2)
    await raw_redis.script_flush()
    await redis_broker.enqueue_many([Envelope("j", "q", b"x")])
    (got,) = await asyncio.wait_for(receiver, 5.0)
    assert got.envelope.id == "j"
    assert got.deliveries == 1


async def test_a_call_without_a_reply_times_out_and_the_client_recovers(prefixed_url: str) -> None:
    """A reply later than the call's deadline (connect + read timeout) fails it on time."""
    url = prefixed_url + "&socket_timeout=0.5&socket_connect_timeout=0.5&retries=0"
    broker = RedisBroker.from_url(url)
    try:
        await broker.connect()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=r"no answer within 1s"):
            # BLPOP on a command connection holds its reply for 3 s: well past the deadline.
            await broker._client.commands([("BLPOP", "upnext-test-nothing", 3)])
        took = time.monotonic() - started
        assert 0.95 <= took < 1.5, took
        await broker.enqueue_many([Envelope("j", "q", b"x")])
        (got,) = await broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
        assert got.envelope.id == "j"
    finally:
        await broker.aclose()


@pytest.mark.parametrize("call", ["enqueue", "count"])
async def test_a_frozen_server_fails_each_call_within_its_budget(
    outage_proxy: Any, via_proxy: Callable[[str, int], str], prefixed_url: str, call: str
) -> None:
    """Connected, then the server goes silent (reconnects accepted, never answered): each call
    raises BrokerUnavailable within socket_connect_timeout + socket_timeout, not in redis-py's
    nested handshake retries."""
    url = via_proxy(prefixed_url, outage_proxy.port) + "&socket_timeout=0.5"
    broker = RedisBroker.from_url(url + "&socket_connect_timeout=0.5")
    await broker.connect()
    try:
        await broker.enqueue_many([Envelope("a", "q", b"x")])
        outage_proxy.blackhole()
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "enqueue": lambda: broker.enqueue_many([Envelope("b", "q", b"x")]),
            "count": broker.dlq_count,
        }
        for _ in range(2):  # the first call times out its read; the next one reconnects
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(calls[call](), 10.0)  # the hang this proves gone
            assert time.monotonic() - started <= 1.0 + 0.4
    finally:
        outage_proxy.blackhole(False)
        await broker.aclose()


async def test_a_blocked_receive_on_a_frozen_server_fails_within_its_block_time_and_budget(
    outage_proxy: Any, via_proxy: Callable[[str, int], str], prefixed_url: str
) -> None:
    """A receive blocked when the server goes silent fails within connect + read timeout plus
    the time it blocks, not `recovery_interval` later (it held a worker's receive loop 5 s)."""
    url = via_proxy(prefixed_url, outage_proxy.port) + "&socket_timeout=0.5"
    broker = RedisBroker.from_url(url + "&socket_connect_timeout=0.5")
    await broker.connect()
    try:
        started = time.monotonic()
        receive = asyncio.ensure_future(broker.receive(["q"], limit=1, lease=30.0, wait=0.25))
        await asyncio.sleep(0.05)  # its script has run: it is blocked on XREAD
        outage_proxy.blackhole()
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(receive, 10.0)
        assert time.monotonic() - started <= 1.0 + 0.25 + 0.4
    finally:
        outage_proxy.blackhole(False)
        await broker.aclose()


async def test_more_callers_than_connections_share_the_ones_the_wire_holds(
    prefixed_url: str,
) -> None:
    """200 concurrent calls on a pool of 4 all finish quickly: a caller beyond the pool waits
    for a connection the wire puts back, not for the pool's own (never returned) ones."""
    broker = RedisBroker.from_url(prefixed_url + "&max_connections=4")
    await broker.connect()
    try:
        started = time.monotonic()
        counts = await asyncio.wait_for(
            asyncio.gather(*(broker.dlq_count() for _ in range(200))), 30.0
        )
        took = time.monotonic() - started
        assert counts == [0] * 200
        assert took < 2.0, f"200 calls on 4 connections took {took:.2f} s"
    finally:
        await broker.aclose()


async def test_a_closed_broker_reconnects_with_its_whole_pool(prefixed_url: str) -> None:
    """After aclose, the next calls may use every connection of the pool again."""
    broker = RedisBroker.from_url(prefixed_url + "&max_connections=4")
    for _ in range(3):
        await broker.connect()
        try:
            calls = asyncio.gather(*(broker.dlq_count() for _ in range(20)))
            assert await asyncio.wait_for(calls, 5.0) == [0] * 20
        finally:
            await broker.aclose()


async def _kill_connections(raw: aioredis.Redis, name: str) -> int:
    """CLIENT KILL every connection named `name` (the broker's command connections)."""
    killed = 0
    for client in await raw.client_list():
        if client.get("name") == name:
            killed += await raw.client_kill_filter(_id=client["id"])
    return killed


async def test_held_connections_killed_by_the_server_reconnect_with_replies_in_order(
    prefixed_url: str, raw_redis: aioredis.Redis
) -> None:
    """Command connections stay checked out between calls (lanes): after the server
    killed them, single calls and pipelines reconnect through Retry, and every caller
    reads its own reply (each queue holds a different number of jobs)."""
    broker = RedisBroker.from_url(prefixed_url + "&max_connections=3")
    await broker.connect()
    try:
        queues = [f"k{n}" for n in range(6)]
        for n, queue in enumerate(queues):
            await broker.enqueue_many([Envelope(f"{queue}-{i}", queue, b"x") for i in range(n)])
        for _ in range(3):
            await asyncio.gather(*(broker.stats(q) for q in queues))  # lanes hold connections
            assert await _kill_connections(raw_redis, broker._client.name) >= 1
            ready = await asyncio.gather(*(broker.stats(q) for q in queues * 3))
            assert [s.ready for s in ready] == list(range(6)) * 3
            assert await broker.queues() == queues[1:]  # k0 never had a job
            assert await broker.dlq_count() == 0
    finally:
        await broker.aclose()


async def test_pipelines_and_lanes_share_max_connections(
    prefixed_url: str, raw_redis: aioredis.Redis
) -> None:
    """Single calls (lanes keep their connection) and pipelines (checked out of the pool)
    together never open more than max_connections, and none waits for ever."""
    broker = RedisBroker.from_url(prefixed_url + "&max_connections=4")  # the least allowed
    await broker.connect()
    try:
        envelopes = [Envelope(f"j{i}", f"q{i % 3}", b"x") for i in range(30)]
        await broker.enqueue_many(envelopes)  # three queues: a pipeline with SADD
        for _ in range(3):
            calls: list[Awaitable[object]] = [broker.stats("q0") for _ in range(40)]
            calls += [broker.enqueue_many([Envelope(f"m{i}", f"n{i}", b"x")]) for i in range(40)]
            await asyncio.wait_for(asyncio.gather(*calls), 10.0)
            names = [c.get("name") for c in await raw_redis.client_list()]
            assert names.count(broker._client.name) <= 4
        assert (await broker.stats("q0")).ready == 10
    finally:
        await broker.aclose()
