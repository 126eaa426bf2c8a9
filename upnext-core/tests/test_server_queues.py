"""The REST API's paused queues on memory://: GET /api/v1/queues/paused, POST .../pause|resume.

A worker consumes the queue in-process; the server sets and clears the pause
in the shared state, which the worker reads in its tick.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import upnext
from upnext.testing import needs_modules

needs_modules("fastapi")

from upnext.server import create_app  # noqa: E402


@pytest.fixture
def url() -> str:
    return f"memory://pause-{uuid.uuid4().hex}"


@pytest.fixture
async def api(url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(url, queues=["pq"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        try:
            yield client
        finally:
            await app.state.backend.aclose()


async def test_pause_lists_the_queue_paused_and_stops_its_jobs(
    api: httpx.AsyncClient, url: str
) -> None:
    worker = upnext.Worker("pq", broker=url, load_plugins=False)
    ran: list[int] = []

    @worker.task
    async def job(n: int) -> None:
        ran.append(n)

    paused = await api.post("/api/v1/queues/pq/pause", json={"reason": "incident"})
    assert paused.status_code == 200
    assert paused.json()["queue"] == "pq"
    assert paused.json()["reason"] == "incident"
    listed = (await api.get("/api/v1/queues/paused")).json()
    assert listed["state"] == "available"
    assert [p["queue"] for p in listed["paused"]] == ["pq"]
    [queue] = (await api.get("/api/v1/queues")).json()["queues"]
    assert queue["name"] == "pq"
    assert queue["paused"] is True
    async with worker:
        await job.submit(1)
        await asyncio.sleep(0.3)
        assert ran == []
        resumed = await api.post("/api/v1/queues/pq/resume")
        assert resumed.json() == {"queue": "pq", "was_paused": True}
        await worker.join(timeout=3.0)
    assert ran == [1]
    [queue] = (await api.get("/api/v1/queues")).json()["queues"]
    assert queue["paused"] is False
    assert (await api.get("/api/v1/queues/paused")).json()["paused"] == []


async def test_a_paused_queue_the_broker_does_not_list_is_shown(api: httpx.AsyncClient) -> None:
    """Paused by name only: listed with null counts, so the dashboard can resume it."""
    await api.post("/api/v1/queues/elsewhere/pause")
    queues = {q["name"]: q for q in (await api.get("/api/v1/queues")).json()["queues"]}
    assert queues["elsewhere"]["paused"] is True
    assert queues["elsewhere"]["ready"] is None
    assert queues["pq"]["paused"] is False
    second = await api.post("/api/v1/queues/elsewhere/resume")
    assert second.json()["was_paused"] is True
    again = await api.post("/api/v1/queues/elsewhere/resume")
    assert again.json()["was_paused"] is False


async def test_a_bad_name_or_reason_is_refused(api: httpx.AsyncClient) -> None:
    long = await api.post("/api/v1/queues/pq/pause", json={"reason": "x" * 501})
    assert long.status_code == 422
    control = await api.post("/api/v1/queues/a%0Ab/pause")
    assert control.status_code == 422
