"""A real Worker through connection cuts: nothing lost, and it resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
import upnext
from upnext.errors import BrokerError
from upnext_redis.keys import KeySpace


async def test_worker_survives_repeated_outages(
    prefixed_url: str,
    outage_proxy: Any,
    via_proxy: Callable[[str, int], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five 3 s cuts mid-run: every job completes, and the worker needs no help."""
    url = via_proxy(prefixed_url, outage_proxy.port) + "&socket_timeout=1&retries=1"
    worker = upnext.Worker("reliable", broker=url, concurrency=8, lease=3.0, receive_wait=1.0)
    ran: set[int] = set()

    @worker.task(name="work", result_ttl=120)
    async def work(n: int) -> int:
        await asyncio.sleep(0.04)
        ran.add(n)
        return n

    futures: list[upnext.Future[int]] = []
    async with worker:
        # A wave of jobs before each cut (each wave takes ~0.5 s to run), so
        # every cut falls on jobs in flight and the run spans all five.
        for wave in range(5):
            numbers = range(wave * 100, wave * 100 + 100)
            futures += await work.submit_many([{"n": n} for n in numbers])
            await asyncio.sleep(0.3)
            assert not set(numbers) <= ran, f"cut {wave + 1} must fall in the middle of a wave"
            await outage_proxy.outage(3.0)
        values = await asyncio.wait_for(
            asyncio.gather(*(f.value(timeout=30.0) for f in futures)), 40.0
        )
    await worker.aclose()
    assert sorted(values) == list(range(500))
    assert ran == set(range(500))
    assert any("unreachable" in r.getMessage() for r in caplog.records), "no outage was seen"


async def test_acknowledged_enqueues_survive_a_server_crash(
    restartable_redis: Callable[..., Any],
) -> None:
    """With appendfsync always, every enqueue that returned completes after a kill -9."""
    server = restartable_redis("--appendonly", "yes", "--appendfsync", "always")
    url = f"redis://127.0.0.1:{server.port}/0?socket_timeout=1&retries=2"
    worker = upnext.Worker("crash", broker=url, concurrency=8, lease=2.0, receive_wait=0.5)
    ran: set[int] = set()
    accepted: set[int] = set()
    submitting = True
    all_ran = asyncio.Event()

    @worker.task(name="work", result_ttl=60)
    async def work(n: int) -> None:
        await asyncio.sleep(0.01)
        ran.add(n)
        if not submitting and accepted <= ran:
            all_ran.set()

    pending_at_kill = 0
    async with worker:
        for batch in range(8):
            numbers = list(range(batch * 50, batch * 50 + 50))
            with contextlib.suppress(BrokerError):
                await work.submit_many([{"n": n} for n in numbers])
                accepted.update(numbers)
            if batch == 3:
                pending_at_kill = len(accepted - ran)
                server.kill()
                await asyncio.sleep(0.3)
                server.start()
            await asyncio.sleep(0.05)
        submitting = False
        if accepted <= ran:
            all_ran.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_ran.wait(), 20.0)
    await worker.aclose()
    assert pending_at_kill > 0, "the crash must hit jobs not yet run"
    assert len(accepted) >= 300, "most batches must have been accepted"
    assert accepted - ran == set(), "an acknowledged enqueue was lost"


def _spawn(url: str, ran_key: str) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("_kill_worker.py")
    return subprocess.Popen([sys.executable, str(script), url, ran_key])


async def _wait_runs(client: aioredis.Redis, key: str, at_least: int, within: float) -> list[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        # LLEN first: reading the whole ledger every tenth of a second costs the machine.
        if await client.llen(key) >= at_least or loop.time() > deadline:
            runs = [int(n) for n in await client.lrange(key, 0, -1)]
            if len(set(runs)) >= at_least or loop.time() > deadline:
                return runs
        await asyncio.sleep(0.1)  # the runs happen in another process


async def test_a_killed_worker_loses_nothing(prefixed_url: str, key_prefix: str) -> None:
    """SIGKILL mid-burst: the next worker finishes every job; duplicates only of jobs in flight."""
    total = 5_000
    ran_key = f"{key_prefix}:ran"  # the ledger: not a broker key, so no broker script touches it
    producer = upnext.Worker("killme", broker=prefixed_url)

    @producer.task(name="work", result_ttl=60)
    async def work(n: int) -> None: ...

    futures = await work.submit_many([{"n": n} for n in range(total)])
    number_of = {future.job_id: n for n, future in enumerate(futures)}
    await producer.aclose()
    client = aioredis.Redis.from_url(prefixed_url.partition("?")[0])
    first = _spawn(prefixed_url, ran_key)
    try:
        before = await _wait_runs(client, ran_key, 500, within=30.0)
        assert len(set(before)) >= 500, "the first worker must get going"
    finally:
        first.kill()
        first.wait()
    # What the dead worker held: leased and never settled. Only these may run twice.
    leased_key = KeySpace(key_prefix).queue("killme").group[2]
    leased = cast("list[bytes]", await client.zrange(leased_key, 0, -1))
    in_flight = {number_of[job_id.decode()] for job_id in leased}
    at_kill = await client.llen(ran_key)
    second = _spawn(prefixed_url, ran_key)
    try:
        await _wait_runs(client, ran_key, total, within=60.0)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    # Read the ledger once the worker has stopped, so no late duplicate escapes the count.
    executions = Counter(int(n) for n in await client.lrange(ran_key, 0, -1))
    await client.aclose()
    assert set(executions) == set(range(total)), "every job must complete"
    assert at_kill < total, "the kill must fall in the middle of the burst"
    assert in_flight, "the kill must catch jobs in flight"
    twice = {n for n, count in executions.items() if count > 1}
    assert twice <= in_flight, "only jobs in flight at the kill may run again"
    assert max(executions.values()) <= 2, "a job in flight runs at most once more"


async def test_garbage_in_the_queue_is_dead_lettered_and_the_worker_goes_on(
    prefixed_url: str, key_prefix: str, raw_redis: aioredis.Redis
) -> None:
    """Bytes written straight into a queue reach the DLQ with a reason; real jobs still run."""
    worker = upnext.Worker("garbage", broker=prefixed_url, concurrency=4, receive_wait=0.5)

    @worker.task(name="work", result_ttl=60)
    async def work(n: int) -> int:
        return n * 2

    keys = KeySpace(key_prefix).queue("garbage")
    await raw_redis.hset(keys.group[3], "raw-1", b"\xff\x00 not a job")
    await raw_redis.rpush(keys.group[0], "raw-1")
    async with worker:
        result = await work.wait(n=21, wait_timeout=10.0)
        page = await worker.dlq.list(limit=10)
    await worker.aclose()
    assert result.value == 42
    assert [entry.job_id for entry in page.items] == ["raw-1"]
    assert "undecodable" in page.items[0].reason, page.items[0].reason
    assert not page.items[0].replayable
