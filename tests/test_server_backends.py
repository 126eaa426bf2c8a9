"""The REST API on Redis, RabbitMQ and PostgreSQL: a real failing job's DLQ entry end to end.

Each backend: a Worker runs a task that always fails (retries=0); the entry is
listed, shown, replayed (a second replay is 404), the replayed job fails again
into a new entry, which is deleted. Unreachable servers fail the test when
``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and skip otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import upnext
from upnext.broker.protocol import QueueAdmin
from upnext.testing import needs_modules, needs_server
from upnext.testing.loopback import free_port, serve_in_thread

needs_modules("fastapi", "uvicorn", "playwright")

from playwright.async_api import Page, expect  # noqa: E402
from upnext.cli import main  # noqa: E402
from upnext.server import create_app  # noqa: E402
from upnext.testing.browser import chromium_path, open_page  # noqa: E402

_AMQP = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
URLS = {
    "redis": os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    # Other test runs on the shared server may scan every DLQ at once (a scan is exclusive):
    # wait longer than the default 2 s before "busy".
    "amqp": _AMQP + ("&" if "?" in _AMQP else "?") + "dlq_busy_wait=15",
    "postgresql": os.environ.get(
        "UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}


class Setup:
    """A worker with an always-failing task on its own queue, and an API client."""

    def __init__(self, worker: upnext.Worker, client: httpx.AsyncClient, queue: str) -> None:
        self.worker = worker
        self.client = client
        self.queue = queue


@pytest.fixture(params=sorted(URLS))
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    url = URLS[request.param]
    needs_server(url)
    queue = f"srv-{uuid.uuid4().hex[:10]}"
    worker = upnext.Worker(queue, broker=url, load_plugins=False, receive_wait=0.5)

    @worker.task(retries=0, name="srv.fail")
    async def fail(order: int) -> None:
        raise RuntimeError(f"card declined for order {order}")

    app = create_app(url, queues=[queue])
    transport = httpx.ASGITransport(app=app)
    async with (
        worker,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
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


async def _dead_letters(url: str, queue: str, count: int) -> list[str]:
    """Run `count` always-failing jobs on `queue` through a real worker; their job ids."""
    worker = upnext.Worker(queue, broker=url, load_plugins=False, receive_wait=0.5)

    @worker.task(retries=0, name="cli.fail")
    async def fail(order: int) -> None:
        raise RuntimeError(f"card declined for order {order}")

    async with worker:
        futures = [await fail.submit(i) for i in range(count)]
        for future in futures:
            with pytest.raises(upnext.TaskExecutionError):
                await future.result(timeout=10)
    return [f.job_id for f in futures]


async def _cleanup(url: str, queue: str) -> None:
    worker = upnext.Worker(queue, broker=url, load_plugins=False)
    client = await worker.client()
    await worker.dlq.purge(queue)
    if isinstance(client.broker, QueueAdmin):
        await client.broker.purge(queue)
    await worker.aclose()


@pytest.mark.parametrize("scheme", sorted(URLS))
def test_cli_lists_shows_replays_deletes(scheme: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`upnext dlq`: list (table and JSON), show, replay (again: exit 1), delete (again: exit 1)."""
    url = URLS[scheme]
    needs_server(url)
    queue = f"cli-{uuid.uuid4().hex[:10]}"
    asyncio.run(_dead_letters(url, queue, 2))

    def cli(*args: str) -> tuple[int, str]:
        code = main(["dlq", "--broker", url, *args])
        return code, capsys.readouterr().out

    try:
        code, out = cli("list", "--queue", queue, "--json")
        first, second = (item["id"] for item in json.loads(out)["items"])
        code, out = cli("list", "--queue", queue)
        assert code == 0
        assert out.startswith("ID")
        assert first in out
        assert second in out
        # A dotted suffix of the function's name matches it ("fail" of "cli.fail").
        code, out = cli("list", "--queue", queue, "--function", "fail", "--limit", "1")
        more = shlex.split(out.splitlines()[-1].removeprefix("more: "))
        assert more[:3] == ["upnext", "dlq", "list"]  # the next page keeps every filter
        assert more[3:9] == ["--limit", "1", "--queue", queue, "--function", "fail"]
        code, out = cli(*more[2:])
        assert code == 0
        assert out.count("cli.fail") == 1
        assert "cli.fail" not in cli("list", "--queue", queue, "--function", "ail")[1]
        code, out = cli("show", first)
        assert "card declined" in out
        assert "OUTCOME" in out
        # By the id of the job that died: the same entry.
        job = json.loads(cli("show", first, "--json")[1])["job_id"]
        assert json.loads(cli("show", job, "--queue", queue, "--json")[1])["id"] == first
        listed = json.loads(cli("list", "--job-id", job, "--json")[1])["items"]
        assert [item["id"] for item in listed] == [first]
        code, out = cli("replay", first)
        assert code == 0
        assert f"replayed {first} as job" in out
        assert cli("replay", first)[0] == 1
        assert cli("delete", second) == (0, f"deleted {second}\n")
        assert cli("delete", second)[0] == 1
        assert main(["dlq", "--broker", url, "show", second]) == 1
        missing = f"no dead-letter entry with id or job id {second} (already replayed or deleted?)"
        assert capsys.readouterr().err.strip() == f"error: {missing}"
        assert main(["dlq", "--broker", url, "show", second, "--queue", queue]) == 1
        assert f"job id {second} in queue {queue} (already" in capsys.readouterr().err
        assert json.loads(cli("list", "--queue", queue, "--json")[1])["items"] == []
    finally:
        asyncio.run(_cleanup(url, queue))


@contextmanager
def _server_process(url: str, *extra: str) -> Iterator[tuple[int, list[str]]]:
    """`upnext server` as a child process on a free port; yields the port and, after, its output."""
    port = free_port()
    cmd = [sys.executable, "-m", "upnext.cli", "server", "--broker", url, "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        yield port, output
    finally:
        proc.terminate()
        output.append(proc.communicate(timeout=10)[0])


def test_upnext_server_process_hides_the_password() -> None:
    """`upnext server` as a process: health answers; no output or response shows the password.

    PostgreSQL here trusts local connections, so a canary password in the URL is accepted.
    """
    url = URLS["postgresql"]
    needs_server(url)
    parts = urlsplit(url)
    secret = f"canary{uuid.uuid4().hex[:8]}"
    netloc = f"{parts.username or 'postgres'}:{secret}@{parts.hostname}:{parts.port or 5432}"
    with _server_process(parts._replace(netloc=netloc).geturl()) as (port, output):
        texts = [_get_when_up(port, path) for path in ("/api/v1/health", "/api/v1/queues", "/")]
    assert '"status":"ok"' in texts[0]
    assert "upnext server for postgresql://postgres:***@" in output[0]
    assert all(secret not in text for text in [*texts, *output])


def _get_when_up(port: int, path: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("scheme", sorted(URLS))
async def test_dashboard_replays_and_deletes(scheme: str) -> None:
    """In Chromium against a live server: filter, open, replay and delete entries."""
    url = URLS[scheme]
    needs_server(url)
    chromium_path()  # skips, or fails under CI, before any job is made
    queue = f"dash-{uuid.uuid4().hex[:10]}"
    await _dead_letters(url, queue, 2)
    try:
        # In a thread: faster than a process (the DLQ is on the broker's server).
        with serve_in_thread(create_app(url, queues=[queue])) as base:
            async with open_page() as (page, _):
                await _drive(page, base, queue)
    finally:
        await _cleanup(url, queue)


# A scan-type DLQ (RabbitMQ) reads one entry by scanning, one admin at a time, and
# the server waits up to dlq_busy_wait for its turn: allow for that, not the 5 s default.
UI_TIMEOUT_MS = 30_000


async def _drive(page: Page, base: str, queue: str) -> None:
    rows = page.locator("#entries tbody tr")
    await page.goto(f"{base}/#dlq")
    await expect(page.locator(f"#queues tr[data-queue='{queue}'] td.dead")).to_have_text("2")
    await page.fill("#filter-queue", queue)
    await page.click("#filters button[type=submit]")
    await expect(rows).to_have_count(2)
    for button, done in (("#entry-replay", "replayed"), ("#entry-delete", "deleted")):
        entry_id = await rows.first.get_attribute("data-id")
        await rows.first.click()
        await expect(page.locator("#entry-traceback")).to_contain_text(
            "card declined", timeout=UI_TIMEOUT_MS
        )
        await page.click(button)
        await page.click("#confirm-ok")
        await expect(page.locator("#status")).to_contain_text(
            f"{done} {entry_id}", timeout=UI_TIMEOUT_MS
        )
        await expect(page.locator(f"#entries tr[data-id='{entry_id}']")).to_have_count(0)
    await expect(rows).to_have_count(0)


async def test_busy_rabbitmq_dead_letter_queue_is_409() -> None:
    """While another admin holds a RabbitMQ DLQ scan, the API answers 409 "busy", not 5xx."""
    from upnext_rabbitmq import RabbitBroker

    url = URLS["amqp"]
    needs_server(url)
    queue = f"busy-{uuid.uuid4().hex[:10]}"
    await _dead_letters(url, queue, 1)
    impatient = _AMQP + ("&" if "?" in _AMQP else "?") + "dlq_busy_wait=0.2"
    holder = RabbitBroker(url)
    await holder.connect()
    app = create_app(impatient, queues=[queue])
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            holder._scan([queue]),  # the admin side of another process, held open
            httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
        ):
            response = await client.get("/api/v1/dlq", params={"queue": queue})
        assert response.status_code == 409
        assert response.json()["error"] == "busy"
    finally:
        await holder.aclose()
        await app.state.backend.aclose()
        await _cleanup(url, queue)


def test_upnext_worker_process_runs_jobs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`upnext worker mod:worker` runs jobs submitted by `upnext submit`, and exits 0 on SIGTERM."""
    url = URLS["redis"]
    needs_server(url)
    queue = f"cliw-{uuid.uuid4().hex[:10]}"
    (tmp_path / "jobs.py").write_text(
        "import upnext\n"
        f"worker = upnext.Worker({queue!r}, broker={url!r}, receive_wait=0.5)\n\n"
        "@worker.task(name='double')\n"
        "async def double(n: int) -> int:\n"
        "    return n * 2\n"
    )
    cli = [sys.executable, "-m", "upnext.cli"]
    proc = subprocess.Popen([*cli, "worker", "jobs:worker", "--concurrency", "2"], cwd=tmp_path)
    try:
        done = subprocess.run(
            [*cli, "submit", "jobs:double", "--kw", "n=21", "--wait", "30", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == 42
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
