"""Unique jobs across processes: 4 producers x 25 concurrent submits of one key.

Issue 19's done-when line for unique jobs, on each broker that reaches across
processes (Redis, RabbitMQ with its companion Redis result store, PostgreSQL,
the SQLite example on one file), for a plain job id, a throttled key
(`unique_for`) and a debounced one: exactly one of the 100 submits creates the
job, the one worker here runs and settles it once (a debounced job's own
delays aside), and all 100 callers' `value()` return its result. Each broker
gets a namespace of its own (a Redis key prefix, a PostgreSQL schema, a fresh
queue, a temporary file), removed afterwards. Unreachable servers fail under
``CI`` / ``UPNEXT_REQUIRE_SERVICES``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import upnext
from upnext.middleware import Job, Middleware, Settlement
from upnext.testing import unavailable

REDIS_URL = os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PRODUCER = str(Path(__file__).with_name("unique_producer.py"))
PROCESSES, SUBMITS = 4, 25
LIMIT = 60.0


@dataclass
class Place:
    """Where one run's jobs live: the broker and result-store URLs, and its queue."""

    name: str
    broker: str
    results: str
    queue: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:10])


def _with(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


def _reachable(url: str, port: int) -> None:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), 2).close()
    except OSError:
        unavailable(f"no server at {parts.hostname}:{parts.port or port} (docker compose up -d)")


def _place(name: str, tmp_path: Path) -> Place:
    token = uuid.uuid4().hex[:10]
    queue = f"uniq-{token}"
    if name == "redis":
        _reachable(REDIS_URL, 6379)
        return Place(name, _with(REDIS_URL, f"prefix=uniq-{token}"), "", queue, token)
    if name == "rabbitmq":
        _reachable(AMQP_URL, 5672)
        _reachable(REDIS_URL, 6379)
        return Place(name, AMQP_URL, _with(REDIS_URL, f"prefix=uniq-{token}"), queue, token)
    if name == "postgres":
        _reachable(POSTGRES_URL, 5432)
        return Place(name, _with(POSTGRES_URL, f"schema=uniq_{token}"), "", queue, token)
    return Place(name, f"sqlite:///{tmp_path / 'jobs.db'}", "", queue, token)


async def _clean(place: Place) -> None:
    if place.name in ("redis", "rabbitmq"):
        import redis.asyncio as aioredis

        raw = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in raw.scan_iter(match=f"uniq-{place.token}:*", count=1000)]
            if keys:
                await raw.delete(*keys)
        finally:
            await raw.aclose()
    if place.name == "rabbitmq":
        import aio_pika
        from upnext_rabbitmq.topology import amqp_queues

        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            for queue in amqp_queues(place.queue):
                await channel.queue_delete(queue)
        finally:
            await connection.close()
    if place.name == "postgres":
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "uniq_{place.token}" CASCADE')
        finally:
            await conn.close()


@pytest_asyncio.fixture(params=["redis", "rabbitmq", "postgres", "sqlite"])
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    """A fresh namespace on one broker, removed afterwards."""
    made = _place(request.param, tmp_path)
    yield made
    await _clean(made)


class SettleLog(Middleware):
    """Every settlement's status, in the order written."""

    settles_inline = True

    def __init__(self) -> None:
        self.statuses: list[str] = []

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        """Note the status."""
        self.statuses.append(settlement.status)


async def _start(place: Place, job_id: str, mode: str) -> asyncio.subprocess.Process:
    """A producer process, connected and waiting for its start time on stdin."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        PRODUCER,
        *(place.broker, place.results, place.queue, job_id, mode, str(SUBMITS)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), LIMIT)
    assert line.strip() == b"ready", f"a producer did not start: {line!r}"
    return proc


async def _report(proc: asyncio.subprocess.Process, start_at: float) -> dict[str, object]:
    """Send `proc` its start time; its report once its submits are answered."""
    out, _ = await asyncio.wait_for(proc.communicate(f"{start_at}\n".encode()), LIMIT)
    assert proc.returncode == 0, f"a producer failed (exit {proc.returncode})"
    report: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("mode", ["job_id", "unique_for", "debounce"])
async def test_100_submits_of_one_key_from_4_processes_make_one_job(
    place: Place, mode: str
) -> None:
    """One creator among 100 submits, one run, one settle, 100 equal results."""
    settles = SettleLog()
    worker = upnext.Worker(
        place.queue,
        place.broker,
        results=place.results or None,
        load_plugins=False,
        middleware=[settles],
    )
    runs: list[int] = []

    @worker.task(name="unique_processes.work")
    async def work(n: int) -> str:
        runs.append(n)
        await asyncio.sleep(0.3)  # later submits meet it running
        return f"ran {n}"

    job_id = f"{place.queue}-job"
    async with worker:
        # Every producer imported and connected first: a slow start must not make
        # one submit after the others' job ran (a debounced one 0.5 s after them).
        procs = await asyncio.gather(*(_start(place, job_id, mode) for _ in range(PROCESSES)))
        start_at = time.time() + 0.2
        reports = await asyncio.gather(*(_report(proc, start_at) for proc in procs))
        await worker.join(timeout=LIMIT)
    created = sum(int(str(r["created"])) for r in reports)
    values = [v for r in reports for v in r["values"]]  # type: ignore[attr-defined]  # JSON list
    late = [r["late"] for r in reports]  # after the start time, per producer
    assert created == 1, f"{created} of 100 submits created the job; exactly one must ({late=})"
    assert len(runs) == 1, f"the job ran {len(runs)} times"
    settled = [s for s in settles.statuses if s != "scheduled"]  # a debounced job's delays
    assert settled == ["complete"], f"settled as {settles.statuses}"
    assert values == [f"ran {runs[0]}"] * (PROCESSES * SUBMITS), "every caller gets its result"
    ids = {i for r in reports for i in r["ids"]}  # type: ignore[attr-defined]  # JSON list
    assert len(ids) == 1, f"the callers got Futures for {ids}"
    assert ids == {job_id} if mode == "job_id" else ids.pop().startswith(f"{job_id}:")
