"""The dashboard's Pause/Resume button on Redis, in headless Chromium.

On a fresh queue (its own key prefix) the Queues view's button pauses it
(the API then lists it paused) and the same button, now Resume, resumes it;
that workers honour a pause is the conformance suite's (`PauseSemantics`).
Unreachable servers fail the test when ``CI`` or ``UPNEXT_REQUIRE_SERVICES``
is set, and skip otherwise.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import httpx
from upnext.broker.redact import redact_url
from upnext.testing import needs_modules, unavailable
from upnext.testing.loopback import serve_in_thread

needs_modules("fastapi", "uvicorn", "playwright")

from playwright.async_api import expect  # noqa: E402
from upnext.server import create_app  # noqa: E402
from upnext.testing.browser import open_page  # noqa: E402

REDIS = os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WITHIN_MS = 2000


def require_redis() -> None:
    parts = urlsplit(REDIS)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2).close()
    except OSError:
        unavailable(f"no server at {redact_url(REDIS)}: start it (docker compose up -d)")


async def _paused(base: str, queue: str) -> bool | None:
    async with httpx.AsyncClient(base_url=base) as client:
        queues = (await client.get("/api/v1/queues")).json()["queues"]
    paused: bool | None = next(q["paused"] for q in queues if q["name"] == queue)
    return paused


async def test_the_pause_button_pauses_and_resumes_a_queue() -> None:
    require_redis()
    token = uuid.uuid4().hex[:10]
    broker = f"{REDIS}{'&' if '?' in REDIS else '?'}prefix=dashp-{token}"
    queue = f"dashp-{token}"
    app = create_app(broker, queues=[queue])
    with serve_in_thread(app) as base:
        async with open_page() as (page, _):
            await page.goto(f"{base}/#queues")
            button = page.locator(f"#queues tr[data-queue='{queue}'] td.pause button")
            await expect(button).to_have_text("Pause", timeout=WITHIN_MS)
            await button.click()
            await expect(button).to_have_text("Resume", timeout=WITHIN_MS)
            await expect(page.locator(f"#queues tr.paused[data-queue='{queue}']")).to_have_count(1)
            assert await _paused(base, queue) is True
            await button.click()
            await expect(button).to_have_text("Pause", timeout=WITHIN_MS)
            assert await _paused(base, queue) is False
