"""Worker processes SIGKILLed: unacked jobs come back; a job that always kills ends in the DLQ."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
import upnext
from upnext.broker.cursor import dead_letter_page
from upnext_rabbitmq import RabbitBroker

WORKER_SCRIPT = """
import asyncio, os, signal, sys, upnext
url, queue = sys.argv[1:3]
worker = upnext.Worker(queue, broker=url, concurrency=20)

@worker.task(name=queue + ".work")
async def work(i: int) -> int:
    await asyncio.sleep(0.02)
    return i

@worker.task(name=queue + ".suicide")
async def suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)

sys.exit(upnext.run(worker))
"""


async def _child(tmp_path: Path, url: str, queue: str) -> asyncio.subprocess.Process:
    script = tmp_path / "child_worker.py"
    script.write_text(WORKER_SCRIPT)
    return await asyncio.create_subprocess_exec(sys.executable, str(script), url, queue)


async def _wait_for_progress(broker: RabbitBroker, queue: str, total: int) -> None:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        ready = (await broker.stats(queue)).ready
        if ready is not None and ready < total * 0.7:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the child worker made no progress within 20 s")


async def test_sigkilled_worker_loses_no_job(
    amqp_url: str, broker: RabbitBroker, tmp_path: Path
) -> None:
    """A worker killed mid-burst: its unacked jobs come back and all 400 complete."""
    queue = f"kill-{uuid.uuid4().hex[:10]}"
    producer = upnext.Worker(queue, broker=amqp_url, concurrency=20)

    @producer.task(name=f"{queue}.work")
    async def work(i: int) -> int:
        await asyncio.sleep(0.02)
        return i

    try:
        futures = await work.submit_many([{"i": i} for i in range(400)])
        child = await _child(tmp_path, amqp_url, queue)
        try:
            await _wait_for_progress(broker, queue, 400)
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        async with producer:  # the same task, now run in this process
            values = [await f.value(timeout=30.0) for f in futures]
        assert sorted(values) == list(range(400))
    finally:
        await producer.aclose()
        broker._declared.add(queue)  # deleted with the fixture's queues


async def test_job_that_always_kills_its_worker_ends_in_the_dlq(
    amqp_url: str, broker: RabbitBroker, tmp_path: Path
) -> None:
    """Redelivered after each SIGKILL, the job dead-letters as 'worker lost' (max_lost_runs 3)."""
    queue = f"kill-{uuid.uuid4().hex[:10]}"
    producer = upnext.Worker(queue, broker=amqp_url)

    @producer.task(name=f"{queue}.suicide")
    async def suicide() -> None: ...

    try:
        future = await suicide.submit()
        outcome = asyncio.create_task(future.result(60.0))
        kills = 0
        while not outcome.done() and kills < 6:
            child = await _child(tmp_path, amqp_url, queue)
            died = asyncio.create_task(child.wait())
            await asyncio.wait([died, outcome], timeout=20.0, return_when="FIRST_COMPLETED")
            if died.done():
                kills += died.result() == -signal.SIGKILL
            else:  # the job is settled: this worker lives on, stop it
                child.kill()
                await died
        assert kills == 4, f"1 attempt + max_lost_runs 3 should kill 4 workers, killed {kills}"
        with pytest.raises(upnext.TaskExecutionError) as caught:
            await outcome
        assert caught.value.status == "failed"
        [record] = (await dead_letter_page(broker, queue=queue)).records
        assert record.job_id == future.job_id
        assert "lost" in record.reason
    finally:
        await producer.aclose()
        broker._declared.add(queue)
