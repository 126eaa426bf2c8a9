"""A worker process SIGKILLed mid-burst: its leased jobs come back and all complete."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

import upnext
from upnext_postgres import PostgresBroker

WORKER_SCRIPT = """
import asyncio, sys, upnext
url, queue = sys.argv[1:3]
worker = upnext.Worker(queue, broker=url, concurrency=50, lease=1.0)

@worker.task(name=queue + ".work")
async def work(i: int) -> int:
    await asyncio.sleep(0.005)
    return i

sys.exit(upnext.run(worker))
"""


JOBS = 5_000


async def _wait_for_progress(broker: PostgresBroker, queue: str, within: float) -> int:
    """Wait until the child holds jobs and has finished some; its in-flight count."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = await broker.stats(queue)
        if stats.in_flight and stats.ready is not None and stats.ready < JOBS - 100:
            return stats.in_flight
        await asyncio.sleep(0.05)
    raise AssertionError(f"the child worker made no progress within {within} s")


async def test_sigkilled_worker_loses_no_job(
    pg_url: str, pg_broker: PostgresBroker, tmp_path: Path
) -> None:
    """Jobs leased by a killed worker are redelivered after the lease; all 5,000 complete."""
    queue = f"kill-{uuid.uuid4().hex[:10]}"
    producer = upnext.Worker(queue, broker=pg_url, concurrency=50, lease=1.0)

    @producer.task(name=f"{queue}.work")
    async def work(i: int) -> int:
        await asyncio.sleep(0.005)
        return i

    futures = await work.submit_many([{"i": i} for i in range(JOBS)])
    script = tmp_path / "child_worker.py"
    script.write_text(WORKER_SCRIPT)
    child = await asyncio.create_subprocess_exec(sys.executable, str(script), pg_url, queue)
    try:
        orphaned = await _wait_for_progress(pg_broker, queue, within=20.0)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert orphaned > 0
    async with producer:  # the same task, now run in this process
        values = [await f.value(timeout=30.0) for f in futures]
    await producer.aclose()
    assert sorted(values) == list(range(JOBS))
