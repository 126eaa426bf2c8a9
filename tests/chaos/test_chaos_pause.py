"""Pausing a queue across 4 worker processes on each broker, one of them restarted while paused.

Issue 20's done-when line for pausing, on Redis, RabbitMQ (with a Redis
store for the pause) and PostgreSQL: 4 `upnext worker` processes drain a
queue; while jobs keep coming the queue is paused, one worker is stopped and
a new one started, and the queue is resumed. Each job returns when it
started, so the test checks that none started from 1 s after the pause
until the resume (the restarted worker included), and that every job ran,
none lost. Each run has a namespace of its own (`chaoskit.backends`).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import upnext
from chaoskit.backends import Backend, base_url
from upnext.queues import pause_queue, resume_queue
from upnext.workers import live_workers

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

SEEN_WITHIN = 1.0  # the bound: no start from this long after the pause
SLACK = 0.15  # a start stamped just before a tick's read answered, on a busy machine

APP = """\
import asyncio
import time

import upnext

worker = upnext.Worker(
    {queue!r}, {broker!r}, results={results!r}, load_plugins=False, concurrency=2
)


@worker.task(name="pause.stamp")
async def stamp(n: int) -> float:
    started = time.time()
    await asyncio.sleep(0.02)
    return started
"""


def _results(backend: Backend) -> str | None:
    """RabbitMQ keeps no state: its pauses live in Redis, under this run's prefix."""
    if backend.name != "rabbitmq":
        return None
    redis = base_url("redis")
    return f"{redis}{'&' if '?' in redis else '?'}prefix=chaos-{backend.token}"


def _spawn(tmp_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "upnext.cli", "worker", "pauseapp:worker"]
    return subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.DEVNULL)


async def _registered(producer: upnext.Worker, count: int, queue: str) -> None:
    async with asyncio.timeout(30):
        while True:
            if sum(queue in w.queues for w in await live_workers(producer)) >= count:
                return
            await asyncio.sleep(0.1)


async def test_pause_holds_on_4_workers_through_a_restart(backend: Backend, tmp_path: Path) -> None:
    queue, broker, results = backend.queue, backend.url, _results(backend)
    (tmp_path / "pauseapp.py").write_text(APP.format(queue=queue, broker=broker, results=results))
    producer = upnext.Worker(queue, broker, results=results, load_plugins=False)

    @producer.task(name="pause.stamp")
    async def stamp(n: int) -> float:
        raise AssertionError("runs in the worker processes only")

    procs = [_spawn(tmp_path) for _ in range(4)]
    try:
        await _registered(producer, 4, queue)
        futures = [await stamp.submit(n) for n in range(20)]
        await asyncio.gather(*(f.value(timeout=10) for f in futures))
        paused_at = time.time()
        await pause_queue(producer, queue)
        submitted: list[float] = []
        for n in range(20, 50):  # jobs keep coming for 1.5 s
            submitted.append(time.time())
            futures.append(await stamp.submit(n))
            await asyncio.sleep(0.05)
        procs[0].send_signal(signal.SIGTERM)
        procs[0].wait(timeout=30)
        procs.append(_spawn(tmp_path))
        await _registered(producer, 4, queue)  # the new one runs (paused) beside three
        await asyncio.sleep(0.5)
        resumed_at = time.time()
        await resume_queue(producer, queue)
        starts = await asyncio.gather(*(f.value(timeout=15) for f in futures))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        await producer.aclose()
    assert len(starts) == 50, "every job ran, none lost"
    late = [s - paused_at for s in starts if paused_at + SEEN_WITHIN + SLACK < s < resumed_at]
    assert late == [], f"jobs started this long after the pause: {late}"
    seen = paused_at + SEEN_WITHIN + SLACK
    waited = [s >= resumed_at for at, s in zip(submitted, starts[20:], strict=True) if at > seen]
    assert waited, "some jobs were submitted once every worker had seen the pause"
    assert all(waited), "a job submitted once the pause was seen waited for the resume"
