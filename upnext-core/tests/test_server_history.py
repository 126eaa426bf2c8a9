"""``GET /api/v1/queues/history``: depths and throughput sampled by the server (memory://).

`Throughput` is checked alone on made-up registry entries (no negative or
spiking sample whatever workers do); the endpoint against a live server with
a real worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
import upnext
from upnext.errors import ConfigurationError
from upnext.testing import needs_modules
from upnext.testing.loopback import serve_in_thread
from upnext.workers import QueueCounts, WorkerInfo

needs_modules("fastapi", "uvicorn")

from upnext.server import create_app  # noqa: E402
from upnext.server._history import Throughput  # noqa: E402

SINCE = 1000.0


def _info(worker_id: str, started_at: float, **finished: tuple[int, int]) -> WorkerInfo:
    return WorkerInfo(
        worker_id=worker_id,
        name="w",
        host="h",
        pid=1,
        queues=list(finished),
        concurrency=1,
        started_at=started_at,
        beat_at=started_at,
        running_count=0,
        running=[],
        finished={q: QueueCounts(processed=p, failed=f) for q, (p, f) in finished.items()},
    )


def test_growth_is_summed_over_workers_and_the_first_step_is_unknown() -> None:
    throughput = Throughput(SINCE)
    assert throughput.step([_info("a", 1.0, q=(5, 1)), _info("b", 1.0, q=(7, 0))]) is None
    grown = throughput.step([_info("a", 1.0, q=(8, 2)), _info("b", 1.0, q=(9, 0), r=(1, 1))])
    assert grown == {
        "q": QueueCounts(processed=5, failed=1),
        "r": QueueCounts(processed=1, failed=1),
    }


def test_a_new_worker_counts_in_full_only_if_it_started_after_sampling_began() -> None:
    """Started before: its past is not this sample's (no spike); after: all of it is."""
    throughput = Throughput(SINCE)
    throughput.step([])
    grown = throughput.step(
        [_info("old", SINCE - 50, q=(900, 9)), _info("new", SINCE + 5, q=(4, 1))]
    )
    assert grown == {"q": QueueCounts(processed=4, failed=1)}


def test_a_vanished_worker_or_a_reset_counter_never_goes_negative() -> None:
    throughput = Throughput(SINCE)
    throughput.step([_info("a", 1.0, q=(50, 5)), _info("b", 1.0, q=(10, 0))])
    assert throughput.step([_info("b", 1.0, q=(12, 0))]) == {"q": QueueCounts(processed=2)}
    assert throughput.step([_info("b", 1.0, q=(3, 1))]) == {"q": QueueCounts(processed=3, failed=1)}


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="invalid history interval"):
        create_app("memory://", history_interval=0)


def _totals(body: dict[str, Any], queue: str) -> tuple[int, int]:
    points = [p for s in body["samples"] for p in s["queues"] if p["name"] == queue]
    return sum(p["processed"] or 0 for p in points), sum(p["failed"] or 0 for p in points)


async def test_history_samples_depths_and_what_workers_finished() -> None:
    """A worker started after the server: 3 ok + 2 dead-lettered are 5 processed, 2 failed."""
    url = f"memory://history-{uuid.uuid4().hex}"
    with serve_in_thread(create_app(url, queues=["hq"], history_interval=0.05)) as base:
        worker = upnext.Worker("hq", broker=url, load_plugins=False)

        @worker.task(name="h.ok")
        async def ok() -> None:
            return None

        @worker.task(name="h.bad", retries=0)
        async def bad() -> None:
            raise ValueError("no")

        async with worker, httpx.AsyncClient(base_url=base) as client:
            for future in [await ok.submit() for _ in range(3)]:
                await future.result(timeout=5)
            for future in [await bad.submit() for _ in range(2)]:
                with pytest.raises(upnext.TaskExecutionError):
                    await future.result(timeout=5)
            deadline = time.monotonic() + 5
            while True:
                body = (await client.get("/api/v1/queues/history")).json()
                if _totals(body, "hq") == (5, 2) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            only = (await client.get("/api/v1/queues/history", params={"queue": "nope"})).json()
            first = body["samples"][0]["at"]
            newer = (await client.get("/api/v1/queues/history", params={"after": first})).json()
            refused = await client.get(
                "/api/v1/queues/history", params={"after": "2026-13-01T00:00"}
            )
    assert _totals(body, "hq") == (5, 2)
    assert (body["interval"], body["window"]) == (0.05, 3600.0)
    last = body["samples"][-1]["queues"][0]
    assert {k: last[k] for k in ("name", "ready", "scheduled", "in_flight", "dead", "running")} == {
        "name": "hq", "ready": 0, "scheduled": 0, "in_flight": 0, "dead": 2, "running": 0,
    }  # fmt: skip
    assert body["samples"][0]["queues"][0]["processed"] is None  # the first: no baseline
    assert all(s["queues"] == [] for s in only["samples"])
    assert newer["samples"][0]["at"] == body["samples"][1]["at"]  # only those after `first`
    assert (refused.status_code, refused.json()["error"]) == (422, "invalid")


async def test_stats_read_under_way_is_shared_not_queued_behind() -> None:
    """Callers during one read get that read's answer; a caller after it, a new read."""
    from upnext.server._backend import Backend

    backend = Backend(f"memory://stats-{uuid.uuid4().hex[:8]}", None, queues=["q"])
    try:
        first, second = await asyncio.gather(backend.queue_stats(), backend.queue_stats())
        assert first is second
        assert [q.name for q in first] == ["q"]
        assert await backend.queue_stats() is not first
        # A caller that gives up does not cancel the read the others wait on.
        gives_up = asyncio.ensure_future(backend.queue_stats())
        stays = asyncio.ensure_future(backend.queue_stats())
        await asyncio.sleep(0)
        gives_up.cancel()
        assert [q.name for q in await stays] == ["q"]
    finally:
        await backend.aclose()
