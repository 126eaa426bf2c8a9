"""The REST API's live view on memory://: /api/v1/workers and a running job's "active" status.

A worker runs in-process and its tick (once a second) writes the registry the
server reads; a job's body blocks on an event until the test has looked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import upnext
from upnext.testing import needs_modules

needs_modules("fastapi")

from upnext.server import create_app  # noqa: E402

Predicate = Callable[[dict[str, Any]], bool]


class Live:
    """A running worker whose `hold` task blocks until `release` is set, and an API client."""

    def __init__(
        self, worker: upnext.Worker, client: httpx.AsyncClient, release: asyncio.Event
    ) -> None:
        self.worker = worker
        self.client = client
        self.release = release

    async def poll(self, path: str, until: Predicate, timeout: float = 5.0) -> dict[str, Any]:
        """GET `path` until its JSON satisfies `until` (the registry is written once a tick)."""
        async with asyncio.timeout(timeout):
            while True:
                body: dict[str, Any] = (await self.client.get(path)).json()
                if until(body):
                    return body
                await asyncio.sleep(0.05)


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    url = f"memory://workers-{uuid.uuid4().hex}"
    release = asyncio.Event()
    worker = upnext.Worker("wq", broker=url, load_plugins=False, concurrency=3)

    @worker.task(name="hold")
    async def hold() -> str:
        await release.wait()
        return "done"

    app = create_app(url, queues=["wq"])
    transport = httpx.ASGITransport(app=app)
    async with (
        worker,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        try:
            yield Live(worker, client, release)
        finally:
            release.set()
            await app.state.backend.aclose()


def _running(job_id: str) -> Predicate:
    return lambda body: any(r["job_id"] == job_id for w in body["workers"] for r in w["running"])


async def test_a_running_job_is_active_on_its_worker(live: Live) -> None:
    """While its body blocks, the job is "active" with the worker id, attempt and start."""
    future = await live.worker.tasks["hold"].submit()
    listing = await live.poll("/api/v1/workers", _running(future.job_id))
    (worker,) = listing["workers"]
    job = (await live.client.get(f"/api/v1/jobs/{future.job_id}")).json()
    assert job["status"] == "active"
    assert job["worker_id"] == worker["worker_id"]
    assert (job["attempt"], job["function"]) == (1, "hold")
    assert job["started_at"] is not None
    live.release.set()
    assert (await future.result(timeout=5)).value == "done"
    finished = await live.poll(
        f"/api/v1/jobs/{future.job_id}", lambda body: body["status"] != "active"
    )
    assert (finished["status"], finished["worker_id"]) == ("complete", None)


async def test_workers_lists_the_worker_with_its_running_job(live: Live) -> None:
    """The worker's queues, concurrency, a fresh heartbeat and exactly its running job."""
    future = await live.worker.tasks["hold"].submit()
    listing = await live.poll("/api/v1/workers", _running(future.job_id))
    assert listing["registry"] == "available"
    (worker,) = listing["workers"]
    assert (worker["name"], worker["queues"], worker["concurrency"]) == ("wq", ["wq"], 3)
    assert 0.0 <= worker["heartbeat_age"] < 3.0
    assert worker["running_count"] == 1
    (run,) = worker["running"]
    assert (run["job_id"], run["function"], run["attempt"]) == (future.job_id, "hold", 1)


async def test_an_unknown_job_is_unknown_with_workers_alive(live: Live) -> None:
    """No result and no live worker running it: "unknown", no worker fields."""
    await live.poll("/api/v1/workers", lambda body: len(body["workers"]) == 1)
    job = (await live.client.get("/api/v1/jobs/no-such-job")).json()
    assert (job["status"], job["worker_id"], job["attempt"]) == ("unknown", None, None)
