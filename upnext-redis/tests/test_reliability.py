"""A real Worker through connection cuts: nothing lost, and it resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import upnext
from upnext.errors import BrokerError


async def test_worker_survives_repeated_outages(
    prefixed_url: str,
    outage_proxy: Any,
    via_proxy: Callable[[str, int], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three outages mid-run: every job completes, and the worker needs no help."""
    url = via_proxy(prefixed_url, outage_proxy.port) + "&socket_timeout=1&retries=1"
    worker = upnext.Worker("reliable", broker=url, concurrency=8, lease=3.0, receive_wait=1.0)
    ran: set[int] = set()

    @worker.task(name="work", result_ttl=120)
    async def work(n: int) -> int:
        await asyncio.sleep(0.04)
        ran.add(n)
        return n

    futures = await work.submit_many([{"n": n} for n in range(300)])
    async with worker:
        for _ in range(3):
            assert len(ran) < 300, "the outages must fall in the middle of the run"
            await asyncio.sleep(0.3)
            await outage_proxy.outage(1.0)
        values = await asyncio.wait_for(
            asyncio.gather(*(f.value(timeout=30.0) for f in futures)), 40.0
        )
    await worker.aclose()
    assert sorted(values) == list(range(300))
    assert ran == set(range(300))
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
