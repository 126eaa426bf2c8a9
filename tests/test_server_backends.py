"""The REST API on Redis, RabbitMQ and PostgreSQL: a real failing job's DLQ entry end to end.

Each backend: a Worker runs a task that always fails (retries=0); the entry is
listed, shown, replayed (a second replay is 404), the replayed job fails again
into a new entry, which is deleted. Unreachable servers fail the test when
``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and skip otherwise.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import upnext

pytest.importorskip("fastapi")

from upnext.server import create_app

URLS = {
    "redis": os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "amqp": os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    "postgresql": os.environ.get(
        "UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}


def require_service(url: str) -> None:
    """Skip (or, under CI / UPNEXT_REQUIRE_SERVICES, fail) when nothing listens at `url`."""
    parts = urlsplit(url)
    default = {"redis": 6379, "amqp": 5672, "postgresql": 5432}.get(parts.scheme, 0)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default), 2).close()
    except OSError:
        message = f"no server at {upnext._urls.redact_url(url)}: start it (docker compose up -d)"
        if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)


class Setup:
    """A worker with an always-failing task on its own queue, and an API client."""

    def __init__(self, worker: upnext.Worker, client: httpx.AsyncClient, queue: str) -> None:
        self.worker = worker
        self.client = client
        self.queue = queue


@pytest.fixture(params=sorted(URLS))
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    url = URLS[request.param]
    require_service(url)
    queue = f"srv-{uuid.uuid4().hex[:10]}"
    worker = upnext.Worker(queue, broker=url, load_plugins=False, receive_wait=0.5)

    @worker.task(retries=0, name="srv.fail")
    async def fail(order: int) -> None:
        raise RuntimeError(f"card declined for order {order}")

    app = create_app(url, queues=[queue])
    transport = httpx.ASGITransport(app=app)
    async with worker, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        try:
            yield Setup(worker, client, queue)
        finally:
            await client.request("DELETE", "/api/v1/dlq", params={"queue": queue})
            await app.state.backend.aclose()


async def _one_entry(setup: Setup) -> dict[str, object]:
    page = await setup.client.get("/api/v1/dlq", params={"queue": setup.queue})
    assert page.status_code == 200, page.text
    (item,) = page.json()["items"]
    assert isinstance(item, dict)
    return item


async def test_failed_job_listed_shown_replayed_deleted(setup: Setup) -> None:
    """Through the API: list, show, replay (again: 404), the replay's new entry, delete."""
    future = await setup.worker.tasks["srv.fail"].submit(7)
    with pytest.raises(upnext.TaskExecutionError):
        await future.result(timeout=10)
    item = await _one_entry(setup)
    assert (item["job_id"], item["function"]) == (future.job_id, "srv.fail")
    assert item["payload"] == {"args": [], "kwargs": {"order": 7}}
    shown = (await setup.client.get(f"/api/v1/dlq/{item['id']}")).json()
    assert "card declined for order 7" in shown["error"]["traceback"]
    replay = await setup.client.post(f"/api/v1/dlq/{item['id']}/replay")
    assert replay.status_code == 200, replay.text
    assert (await setup.client.post(f"/api/v1/dlq/{item['id']}/replay")).status_code == 404
    await setup.worker.join(timeout=10)
    again = await _one_entry(setup)
    assert again["job_id"] == replay.json()["job_id"]
    assert again["replay_of"] == future.job_id
    assert (await setup.client.delete(f"/api/v1/dlq/{again['id']}")).status_code == 204
    assert (await setup.client.get(f"/api/v1/dlq/{again['id']}")).status_code == 404
    listed = await setup.client.get("/api/v1/dlq", params={"queue": setup.queue})
    assert listed.json()["items"] == []


async def test_queue_counts_and_job_status(setup: Setup) -> None:
    """/queues shows the worker's queue with its dead count; /jobs the failed result or unknown."""
    future = await setup.worker.tasks["srv.fail"].submit(1)
    with pytest.raises(upnext.TaskExecutionError):
        await future.result(timeout=10)
    queues = {q["name"]: q for q in (await setup.client.get("/api/v1/queues")).json()["queues"]}
    assert queues[setup.queue]["dead"] == 1
    unknown = await setup.client.get(
        f"/api/v1/jobs/{uuid.uuid4().hex}", params={"queue": setup.queue}
    )
    assert unknown.json()["status"] == "unknown"
    health = await setup.client.get("/api/v1/health")
    assert health.status_code == 200
    assert "@" not in health.text
