"""The dashboard on Redis, RabbitMQ and PostgreSQL: 50 jobs in every state, counted right.

In a fresh queue: 30 jobs succeed, 10 fail into the dead-letter queue
(retries=0), 5 are scheduled an hour ahead and 5 run on two real workers
(each body waits on an event until the test ends). Within 2 s of the last
submit the REST API shows every count and each running job on its worker;
then the dashboard in headless Chromium shows the same (each view within
2 s of being opened), with no console error. RabbitMQ keeps its worker
registry in the result store (``results=`` Redis) and runs in a vhost of this
module's (made with ``rabbitmqctl``): without a management API the server asks
the broker about every queue upnext ever declared in the vhost, and the shared
vhost holds every other test's queues (a few ms each). Unreachable servers fail
the test when ``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and skip otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import upnext
from upnext.broker.protocol import QueueAdmin
from upnext.testing import needs_modules, needs_server, unavailable
from upnext.testing.loopback import serve_in_thread

needs_modules("fastapi", "uvicorn", "playwright")

from playwright.async_api import Page, expect  # noqa: E402
from upnext.server import create_app  # noqa: E402
from upnext.testing.browser import open_page  # noqa: E402

REDIS = os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES = os.environ.get("UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["amqp", "postgresql", "redis"]
WITHIN_MS = 2000


@dataclass
class Stage:
    """A server and two workers on a fresh queue; the held jobs' ids once submitted."""

    base: str
    queue: str
    workers: list[upnext.Worker]
    release: asyncio.Event
    held: list[str] = field(default_factory=list)


def _worker(queue: str, broker: str, results: str | None, release: asyncio.Event) -> upnext.Worker:
    worker = upnext.Worker(
        queue, broker=broker, results=results, load_plugins=False, concurrency=3, prefetch=0,
        receive_wait=0.5,
    )  # fmt: skip

    @worker.task(name="dash.ok")
    async def ok(n: int) -> int:
        return n

    @worker.task(name="dash.fail", retries=0)
    async def fail(n: int) -> None:
        raise RuntimeError(f"card declined for order {n}")

    @worker.task(name="dash.hold")
    async def hold(n: int) -> int:
        await release.wait()
        return n

    return worker


def _with(url: str, option: str) -> str:
    """`url` with the query option `name=value` set (replacing one of that name)."""
    name, _, value = option.partition("=")
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != name] + [(name, value)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def amqp_vhost() -> Iterator[str]:
    """The AMQP URL of a vhost of this module's on the RabbitMQ server, deleted at the end."""
    needs_server(AMQP)
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not on PATH: these tests make a vhost of their own with it")
    parts = urlsplit(AMQP)
    vhost = f"upnext-dashb-{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable(f"rabbitmqctl could not make a vhost ({exc})")
    try:
        yield urlunsplit(parts._replace(path="/" + vhost))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _urls(scheme: str, token: str, amqp: str | None) -> tuple[str, str | None]:
    """(broker, result store) in a key prefix, schema or vhost of their own."""
    redis = _with(REDIS, f"prefix=dashb-{token}")
    return {
        "redis": (redis, None),
        "amqp": (amqp or "", redis),
        "postgresql": (_with(POSTGRES, f"schema=dashb_{token}"), None),
    }[scheme]


async def _drop_schema(token: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(urlunsplit(urlsplit(POSTGRES)._replace(query="")))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "dashb_{token}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
async def stage(request: pytest.FixtureRequest) -> AsyncIterator[Stage]:
    token = uuid.uuid4().hex[:10]
    amqp = request.getfixturevalue("amqp_vhost") if request.param == "amqp" else None
    broker, results = _urls(request.param, token, amqp)
    needs_server(broker)
    if results:
        needs_server(results)
    queue = f"dashb-{token}"
    release = asyncio.Event()
    app = create_app(broker, results, queues=[queue], history_interval=0.5)
    # The server first: workers that start after its first sample count in full.
    with serve_in_thread(app) as base:
        workers = [_worker(queue, broker, results, release) for _ in range(2)]
        async with workers[0], workers[1]:
            try:
                yield Stage(base, queue, workers, release)
            finally:
                release.set()
        await _cleanup(workers[0], queue)
        if request.param == "postgresql":
            await _drop_schema(token)


async def _cleanup(worker: upnext.Worker, queue: str) -> None:
    client = await worker.client()
    await worker.dlq.purge(queue)
    if isinstance(client.broker, QueueAdmin):
        await client.broker.purge(queue)
    await worker.aclose()


async def _submit(stage: Stage) -> None:
    tasks = stage.workers[0].tasks
    done = [await tasks["dash.ok"].submit(i) for i in range(30)]
    failing = [await tasks["dash.fail"].submit(i) for i in range(10)]
    for future in done:
        await future.result(timeout=20)
    for future in failing:
        with pytest.raises(upnext.TaskExecutionError):
            await future.result(timeout=20)
    for i in range(5):
        await tasks["dash.ok"].options(delay=3600).submit(100 + i)
    stage.held = [(await tasks["dash.hold"].submit(i)).job_id for i in range(5)]


def _summary(queues: dict[str, Any], workers: dict[str, Any], queue: str) -> dict[str, Any]:
    q: dict[str, Any] = next((q for q in queues["queues"] if q["name"] == queue), {})
    running = {
        r["job_id"]: w["worker_id"] for w in workers["workers"] for r in w["running"]
        if r["queue"] == queue
    }  # fmt: skip
    return {"ready": q.get("ready"), "scheduled": q.get("scheduled"), "dead": q.get("dead"),
            "running": running}  # fmt: skip


async def _api_settles(stage: Stage) -> dict[str, str]:
    """Poll the API until it shows every count (at most 2 s); running job id -> worker id."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=stage.base) as client:
        while True:
            queues, workers = (
                (await client.get("/api/v1/queues")),
                (await client.get("/api/v1/workers")),
            )
            seen = _summary(queues.json(), workers.json(), stage.queue)
            want = {"ready": 0, "scheduled": 5, "dead": 10}
            if {k: seen[k] for k in want} == want and set(seen["running"]) == set(stage.held):
                break
            assert time.monotonic() - started < WITHIN_MS / 1000, f"after 2 s the API shows {seen}"
            await asyncio.sleep(0.1)
    assert len(set(seen["running"].values())) == 2, "the 5 running jobs are on both workers"
    return dict(seen["running"])


async def test_every_state_counted_in_the_api_and_the_dashboard(stage: Stage) -> None:
    """Ready 0, scheduled 5, running 5 (each on its worker), dead 10, 40 finished, 10 failed."""
    await _submit(stage)
    running = await _api_settles(stage)
    async with open_page() as (page, _):
        await page.goto(f"{stage.base}/#queues")
        row = page.locator(f"#queues tr[data-queue='{stage.queue}']")
        counts = {"ready": "0", "scheduled": "5", "running": "5", "dead": "10"}
        for cls, value in {**counts, "processed": "40", "failed": "10"}.items():
            await expect(row.locator(f"td.{cls}")).to_have_text(value, timeout=WITHIN_MS)
        await page.click("nav a[data-view=running]")
        for job_id, worker_id in running.items():
            group = page.locator(f"#running-groups section[data-worker='{worker_id}']")
            await expect(group.locator(f"tr[data-job-id='{job_id}']")).to_contain_text(
                "dash.hold", timeout=WITHIN_MS
            )
        await page.click("nav a[data-view=workers]")
        for worker_id in set(running.values()):
            mine = sum(1 for w in running.values() if w == worker_id)
            cells = page.locator(f"#workers tr[data-worker='{worker_id}'] td.busy")
            await expect(cells).to_have_text(f"{mine}/3", timeout=WITHIN_MS)
        await _dead_letters(page, stage.queue)


async def _dead_letters(page: Page, queue: str) -> None:
    await page.click("nav a[data-view=dlq]")
    await page.fill("#filter-queue", queue)
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#entries tbody tr")).to_have_count(10, timeout=WITHIN_MS)


async def test_jobs_view_lists_by_status(stage: Stage, tmp_path: Path) -> None:
    """The Jobs view (GET /api/v1/jobs) lists the 30 complete jobs of the queue."""
    await _submit(stage)
    async with open_page() as (page, _):
        await page.goto(f"{stage.base}/#jobs")
        await page.fill("#jobs-queue", stage.queue)
        await page.select_option("#jobs-status", "complete")
        await page.click("#jobs-filters button[type=submit]")
        await expect(page.locator("#jobs tbody tr[data-status=complete]")).to_have_count(30)
