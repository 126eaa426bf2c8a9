"""The REST API's crons on memory://: GET /api/v1/crons, POST .../disable and .../enable.

A worker with a cron runs in-process; its scheduler writes the cron's cursor
and its runs their outcome, which the server reads back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import upnext
from upnext.testing import needs_modules

needs_modules("fastapi")

from upnext.server import create_app  # noqa: E402


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    url = f"memory://crons-{uuid.uuid4().hex}"
    worker = upnext.Worker("cq", broker=url, load_plugins=False)

    @worker.cron(every=0.1, name="cq.beat")
    async def beat() -> None: ...

    app = create_app(url, queues=["cq"])
    transport = httpx.ASGITransport(app=app)
    async with (
        worker,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        try:
            yield client
        finally:
            await app.state.backend.aclose()


async def _beat(client: httpx.AsyncClient, status: str) -> dict[str, Any]:
    """The listed cron once its last run has `status` (its runs write it)."""
    async with asyncio.timeout(5.0):
        while True:
            body = (await client.get("/api/v1/crons")).json()
            assert body["state"] == "available"
            [cron] = body["crons"]
            assert isinstance(cron, dict)
            if cron["last_run"] is not None and cron["last_run"]["status"] == status:
                return cron
            await asyncio.sleep(0.05)


async def test_a_cron_is_listed_with_its_schedule_next_run_and_last_outcome(
    api: httpx.AsyncClient,
) -> None:
    cron = await _beat(api, "succeeded")
    assert cron["name"] == "cq.beat"
    assert cron["schedule"] == "every 0.1s"
    assert cron["enabled"] is True
    # As times: as JSON text a whole second ("...:00Z") sorts after "...:00.100000Z".
    next_run = datetime.fromisoformat(cron["next_run"])
    assert next_run > datetime.fromisoformat(cron["last_run"]["scheduled_for"])
    assert cron["last_run"]["job_id"].startswith("cron:cq.beat:")


async def test_disable_and_enable_switch_the_cron(api: httpx.AsyncClient) -> None:
    await _beat(api, "succeeded")
    off = await api.post("/api/v1/crons/cq.beat/disable")
    assert off.status_code == 200
    assert (off.json()["enabled"], off.json()["next_run"]) == (False, None)
    on = await api.post("/api/v1/crons/cq.beat/enable")
    assert on.status_code == 200
    assert on.json()["enabled"] is True
    assert on.json()["next_run"] is not None


async def test_an_unknown_cron_is_404(api: httpx.AsyncClient) -> None:
    await _beat(api, "succeeded")
    response = await api.post("/api/v1/crons/nope/disable")
    assert response.status_code == 404
    assert "nope" in response.text
