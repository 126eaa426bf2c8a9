"""A real Worker through connection cuts: nothing lost, and it resumes by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import upnext


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
