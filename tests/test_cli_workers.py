"""`upnext workers` on Redis: a worker running in this process, seen by the CLI's own client.

memory:// lives inside one process, so the CLI is tried on a real broker (its
own Redis DB number, as other runs share the server). Unreachable servers fail
the test when ``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and skip otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import upnext
from upnext.cli import main
from upnext.testing import needs_server

REDIS = os.environ.get("UPNEXT_TEST_REDIS_WORKERS_URL", "redis://127.0.0.1:6379/9")
AMQP = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class Running:
    """A Redis worker (unique name) whose `hold` task blocks until `release` is set."""

    def __init__(self, worker: upnext.Worker, release: asyncio.Event) -> None:
        self.worker = worker
        self.release = release


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    needs_server(REDIS, 6379)
    queue = f"cliw-{uuid.uuid4().hex[:10]}"
    release = asyncio.Event()
    worker = upnext.Worker(queue, broker=REDIS, load_plugins=False, concurrency=2)

    @worker.task(name="cliw.hold")
    async def hold() -> str:
        await release.wait()
        return "done"

    async with worker:
        try:
            yield Running(worker, release)
        finally:
            release.set()


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `upnext workers --broker REDIS *args` (its own event loop, in a thread)."""
    code = await asyncio.to_thread(main, ["workers", "--broker", REDIS, *args])
    out, err = capsys.readouterr()
    return code, out, err


async def _ours(capsys: pytest.CaptureFixture[str], name: str, job_id: str) -> dict[str, Any]:
    """Poll `upnext workers --json` until worker `name` lists `job_id` (a tick is 1 s)."""
    async with asyncio.timeout(5):
        while True:
            code, out, err = await _cli(capsys, "--json")
            assert (code, err) == (0, "")
            for entry in json.loads(out)["workers"]:
                if entry["name"] == name and any(r["job_id"] == job_id for r in entry["running"]):
                    return dict(entry)
            await asyncio.sleep(0.1)


async def test_json_lists_the_worker_with_its_running_job(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    future = await running.worker.tasks["cliw.hold"].submit()
    entry = await _ours(capsys, running.worker.name, future.job_id)
    assert (entry["queues"], entry["concurrency"], entry["running_count"]) == (
        [running.worker.name],
        2,
        1,
    )
    assert 0.0 <= entry["heartbeat_age"] < 3.0
    (run,) = entry["running"]
    assert (run["function"], run["attempt"]) == ("cliw.hold", 1)


async def test_table_shows_the_worker_and_its_job_id(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    future = await running.worker.tasks["cliw.hold"].submit()
    entry = await _ours(capsys, running.worker.name, future.job_id)
    code, out, _ = await _cli(capsys)
    assert code == 0
    assert out.splitlines()[0].split() == [
        "ID",
        "NAME",
        "QUEUES",
        "CONCURRENCY",
        "HEARTBEAT",
        "RUNNING",
        "JOBS",
    ]
    (row,) = [line for line in out.splitlines() if line.startswith(entry["worker_id"])]
    assert row.split()[1:4] == [running.worker.name, running.worker.name, "2"]
    assert row.split()[-2:] == ["1", future.job_id]


def test_a_broker_without_state_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """RabbitMQ without results=: exit 1, one line naming results=, no password."""
    needs_server(AMQP, 5672)
    assert main(["workers", "--broker", AMQP]) == 1
    err = capsys.readouterr().err
    assert "needs shared state" in err
    assert "results=" in err
    assert "guest:guest" not in err


def test_memory_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workers", "--broker", "memory://"]) == 1
    assert "memory://" in capsys.readouterr().err
