"""The semantic conformance classes against memory://, plus memory-only guarantees."""

from __future__ import annotations

import asyncio
import logging
import uuid
import warnings

import pytest
import upnext
from upnext.testing.semantics import WorkerSemantics


def _memory_url() -> str:
    return f"memory://t-{uuid.uuid4().hex}"


class TestMemorySemantics(WorkerSemantics):
    """Every semantic class on a fresh memory:// broker per test."""

    @pytest.fixture
    def broker_url(self) -> str:
        """A memory:// URL no other test shares."""
        return _memory_url()


async def test_submit_without_a_worker_warns_once(upnext_queue: str) -> None:
    """A memory:// submit with no worker in the process warns once, not on every submit."""
    producer = upnext.Worker(upnext_queue, _memory_url(), load_plugins=False)

    @producer.task
    async def job(x: int) -> int:
        return x

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for x in range(3):
                await job.submit(x=x)
            await asyncio.sleep(1.2)  # core may wait a moment for a worker before warning
            await job.submit(x=3)
        relevant = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(relevant) == 1, "a memory:// submit without a worker warns exactly once"
        assert "no worker" in str(relevant[0].message)
    finally:
        await producer.aclose()


async def test_submit_with_a_running_worker_does_not_warn(upnext_queue: str) -> None:
    """With a worker running in the process, a memory:// submit does not warn."""
    worker = upnext.Worker(upnext_queue, _memory_url(), load_plugins=False)

    @worker.task
    async def job() -> None: ...

    async with worker:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            await job.wait(wait_timeout=5.0)


async def test_jobs_left_queued_at_shutdown_are_reported(
    upnext_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping the last memory:// worker with jobs still queued logs how many are dropped."""
    worker = upnext.Worker(upnext_queue, _memory_url(), load_plugins=False)

    @worker.task
    async def later() -> None: ...

    with caplog.at_level(logging.WARNING, logger="upnext.worker"):
        async with worker:
            await later.options(delay=60.0).submit_many([{}, {}])
            await asyncio.sleep(0.05)
    assert any("2 job(s) still queued" in r.getMessage() for r in caplog.records), (
        "jobs dropped at shutdown on memory:// are counted in a warning"
    )


async def test_seed_backoff_numbers_exactly(upnext_queue: str) -> None:
    """Seed: retries=5, retry_delay=2.0, retry_backoff=2.0 gives delays 2, 4, 8, 16, 32 s."""
    worker = upnext.Worker(upnext_queue, _memory_url(), load_plugins=False)

    @worker.task(retries=5, retry_delay=2.0, retry_backoff=2.0)
    async def api_call() -> None: ...

    delays = [api_call.policy.next_delay(n) for n in range(1, 6)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert api_call.policy.max_attempts == 6
