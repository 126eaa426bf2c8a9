"""What a worker logs: per-job lines on `upnext.job`, and the CLI's text and JSON output.

Run on memory:// (the lines every backend must give are in
`upnext.testing.semantics_logging`).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from typing import Any

import pytest
import upnext
from upnext.cli._logging import JsonFormatter, worker_logging
from upnext.testing._support import receive_exactly
from upnext.testing.semantics_base import wait_until

LIMIT = 5.0
SECRET = "log-canary-pw-123"


def _worker(**options: Any) -> upnext.Worker:
    return upnext.Worker(
        f"log-{uuid.uuid4().hex[:8]}",
        broker=f"memory://{uuid.uuid4().hex}",
        load_plugins=False,
        **options,
    )


def _lines(caplog: pytest.LogCaptureFixture, job_id: str, level: int = logging.INFO) -> list[str]:
    return [
        f"{r.levelname} {getattr(r, 'outcome', '-')} {r.getMessage()}"
        for r in caplog.records
        if r.name == "upnext.job" and r.levelno >= level and getattr(r, "job_id", None) == job_id
    ]


async def test_a_lost_run_is_one_line_then_the_job_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A delivery whose worker died: "lost its worker ... runs again", then the success line."""
    caplog.set_level(logging.INFO, logger="upnext")
    worker = _worker(lease=0.2)

    @worker.task
    async def work() -> int:
        return 1

    job = await work.submit()
    broker = (await worker.client()).broker
    await receive_exactly(broker, [worker.name], 1, within=2.0, lease=0.2)  # held, then "dies"
    await asyncio.sleep(0.25)
    async with worker:
        await job.value(timeout=LIMIT)
        await wait_until(lambda: len(_lines(caplog, job.job_id)) == 2, within=LIMIT, what="2 lines")
    lost, succeeded = _lines(caplog, job.job_id)
    assert lost.startswith("INFO lost ")
    assert "lost its worker during attempt 1 (lost runs so far: 1); runs again" in lost
    assert succeeded.startswith(f"INFO succeeded job {job.job_id} ")
    assert "attempt 1/1 succeeded in" in succeeded


async def test_a_user_cancel_is_one_cancelled_line(caplog: pytest.LogCaptureFixture) -> None:
    """A running job cancelled by a user: one line, "cancelled during attempt 1"."""
    caplog.set_level(logging.INFO, logger="upnext")
    worker = _worker()
    started = asyncio.Event()

    @worker.task
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    async with worker:
        job = await slow.submit()
        await asyncio.wait_for(started.wait(), LIMIT)
        assert worker.consumer is not None
        assert worker.consumer.cancel_job(job.job_id)
        await wait_until(lambda: bool(_lines(caplog, job.job_id)), within=LIMIT, what="a line")
    assert _lines(caplog, job.job_id) == [
        f"INFO cancelled job {job.job_id} {slow.name} cancelled during attempt 1"
        " (cancelled by user)"
    ]


async def test_received_and_started_are_debug_lines(caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG a job also logs when it is received and when its attempt starts."""
    caplog.set_level(logging.DEBUG, logger="upnext")
    worker = _worker()

    @worker.task
    async def work() -> None:
        return None

    async with worker:
        job = await work.submit()
        await job.value(timeout=LIMIT)
        await wait_until(lambda: len(_lines(caplog, job.job_id, 0)) == 3, within=LIMIT, what="3")
    received, started, succeeded = _lines(caplog, job.job_id, 0)
    assert received == f"DEBUG - job {job.job_id} received from queue {worker.name}"
    assert started == f"DEBUG started job {job.job_id} {work.name} attempt 1/1 started"
    assert succeeded.startswith("INFO succeeded ")


async def test_nothing_is_logged_per_job_below_the_level(caplog: pytest.LogCaptureFixture) -> None:
    """With upnext at WARNING (the default), a job that succeeds logs nothing."""
    caplog.set_level(logging.WARNING, logger="upnext")
    worker = _worker()

    @worker.task
    async def work() -> None:
        return None

    async with worker:
        await (await work.submit()).value(timeout=LIMIT)
        await worker.join(timeout=LIMIT)
    assert [r for r in caplog.records if r.name.startswith("upnext")] == []


async def test_banner_drain_and_stop_lines_hide_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start banner (id, queues, broker without password, concurrency, tasks), drain, stop."""
    caplog.set_level(logging.INFO, logger="upnext")
    worker = upnext.Worker(
        "banner", broker=f"memory://user:{SECRET}@{uuid.uuid4().hex}", concurrency=3
    )

    @worker.task
    async def charge() -> None:
        return None

    async with worker:
        assert worker.consumer is not None
        worker_id = worker.consumer.worker_id
    banner, drain, stop = (r.getMessage() for r in caplog.records if r.name == "upnext.worker")
    assert banner == (
        f"worker banner started: id {worker_id}, queues banner, broker"
        f" {worker.safe_broker_url}, concurrency 3, tasks: {charge.name}"
    )
    assert ":***@" in banner
    assert drain.startswith("worker banner draining: 0 running")
    assert stop.startswith("worker banner stopped (drained in ")
    assert SECRET not in caplog.text


def test_json_formatter_writes_the_job_fields(caplog: pytest.LogCaptureFixture) -> None:
    """One object per record: timestamp, level, logger, message and the job's fields."""
    caplog.set_level(logging.INFO, logger="upnext.job")
    fields = {"job_id": "j1", "task": "t", "queue": "q", "attempt": 2, "outcome": "succeeded"}
    logging.getLogger("upnext.job").info("job %s done", "j1", extra={**fields, "duration_ms": 1.5})
    line = JsonFormatter().format(caplog.records[-1])
    data = json.loads(line)
    assert data == {
        "timestamp": data["timestamp"],
        "level": "INFO",
        "logger": "upnext.job",
        "message": "job j1 done",
        **fields,
        "duration_ms": 1.5,
    }
    assert data["timestamp"].endswith("+00:00")


async def test_cli_logging_writes_json_lines_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`worker_logging("info", "json")` writes each job line as JSON through its queue."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's own capture handlers
    out = io.StringIO()
    worker = _worker()

    @worker.task
    async def work(n: int) -> int:
        return n

    with worker_logging("info", "json", stream=out):
        async with worker:
            job = await work.submit(n=1)
            await job.value(timeout=LIMIT)
            await worker.join(timeout=LIMIT)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    [line] = [r for r in records if r.get("job_id") == job.job_id]
    assert line["outcome"] == "succeeded"
    assert (line["task"], line["queue"], line["attempt"]) == (work.name, worker.name, 1)
    assert line["duration_ms"] >= 0
    assert line["logger"] == "upnext.job"
    lifecycle = [r["message"] for r in records if r["logger"] == "upnext.worker"]
    assert [m.split(":")[0].split(" (")[0] for m in lifecycle] == [
        f"worker {worker.name} started",
        f"worker {worker.name} draining",
        f"worker {worker.name} stopped",
    ]
