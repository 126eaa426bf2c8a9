"""/api/v1/workers where no state is kept: RabbitMQ without a result store.

Unreachable servers fail the test when ``CI`` or ``UPNEXT_REQUIRE_SERVICES``
is set, and skip otherwise.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import httpx
from upnext.broker.redact import redact_url
from upnext.testing import needs_modules, unavailable

needs_modules("fastapi")

from upnext.server import create_app  # noqa: E402

AMQP = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def test_rabbitmq_without_results_answers_an_empty_unavailable_registry() -> None:
    """200, no workers, "unavailable" with a reason naming results= (password hidden)."""
    parts = urlsplit(AMQP)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2).close()
    except OSError:
        unavailable(f"no server at {redact_url(AMQP)}: start it (docker compose up -d)")
    app = create_app(AMQP)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            answer = await client.get("/api/v1/workers")
            job = (await client.get("/api/v1/jobs/some-job?queue=q")).json()
    finally:
        await app.state.backend.aclose()
    assert answer.status_code == 200
    body = answer.json()
    assert (body["workers"], body["registry"]) == ([], "unavailable")
    assert "results=" in body["reason"]
    assert parts.password is None or parts.password not in body["reason"]
    assert job["status"] == "unknown"
