"""``GET /metrics`` on Redis and PostgreSQL: worker snapshots read back through the real store.

A worker with metrics on runs 1,000 jobs (100 failing into the DLQ) on its
own queue; after one tick, the server's scrape shows exactly those counts for
that queue and worker. Unreachable servers skip (or fail under CI), as in
test_server_backends.py.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import pytest
import upnext
from upnext.testing import needs_modules, needs_server

needs_modules("fastapi", "prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from upnext.server import create_app  # noqa: E402

JOBS = 1000
URLS = {  # as in test_server_backends.py (test modules cannot import each other here)
    "redis": os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgresql": os.environ.get(
        "UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}


def counted(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples in `text` whose labels include `labels`."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def flaky(url: str, queue: str) -> upnext.Worker:
    """A metrics-on worker whose `work(n)` fails for every n divisible by 10."""
    worker = upnext.Worker(
        queue, broker=url, load_plugins=False, receive_wait=0.5, concurrency=20, metrics=True
    )

    @worker.task(retries=0, name="metrics.work", result_ttl=60)
    async def work(n: int) -> int:
        if n % 10 == 0:
            raise ValueError(n)
        return n

    return worker


async def ended(worker: upnext.Worker, jobs: int, timeout: float = 30.0) -> None:
    """Wait until the worker has counted `jobs` settlements (after_settle is in the background)."""
    assert worker.metrics is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        series = worker.metrics.snapshot("-").series
        if sum(s.succeeded + s.dead_lettered for s in series) >= jobs:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", ["redis", "postgresql"])
async def test_1000_jobs_scraped_through_the_state_store(backend: str) -> None:
    url = URLS[backend]
    needs_server(url)
    queue = f"met-{uuid.uuid4().hex[:10]}"
    worker = flaky(url, queue)
    app = create_app(url, queues=[queue])
    transport = httpx.ASGITransport(app=app)
    async with (
        worker,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        try:
            await worker.tasks["metrics.work"].submit_many({"n": n} for n in range(JOBS))
            await worker.join(timeout=60)
            await ended(worker, JOBS)
            assert worker.consumer is not None
            assert worker.consumer.tick is not None
            await worker.consumer.tick.tick()
            response = await client.get("/metrics")
            mine = {"queue": queue, "worker_id": worker.consumer.worker_id}
        finally:
            await client.request("DELETE", "/api/v1/dlq", params={"queue": queue})
            await app.state.backend.aclose()
    assert response.status_code == 200, response.text
    text = response.text
    assert counted(text, "upnext_jobs_started_total", **mine) == JOBS
    assert counted(text, "upnext_jobs_succeeded_total", **mine) == JOBS - JOBS // 10
    assert counted(text, "upnext_jobs_failed_total", **mine) == JOBS // 10
    assert counted(text, "upnext_jobs_dead_lettered_total", **mine) == JOBS // 10
    assert counted(text, "upnext_job_run_seconds_count", **mine) == JOBS
    assert counted(text, "upnext_workers_alive") >= 1  # other runs may share the server
    assert counted(text, "upnext_queue_depth", queue=queue, state="dead") == JOBS // 10
