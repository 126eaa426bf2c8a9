"""Scenario 10: a job running three times its lease runs exactly once (the heartbeat holds it)."""

from __future__ import annotations

import pytest
from chaoskit.backends import Backend
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import wait_until
from chaoskit.worker import Options, build

pytestmark = pytest.mark.chaos


async def test_long_job_beyond_the_lease_runs_once(any_backend: Backend, ledger: Ledger) -> None:
    """Two workers watch the queue; a 3.5 s job under a 1 s lease is never handed to the other."""
    options = Options(concurrency=2, lease=1.0, receive_wait=0.2)
    first, tasks = build(any_backend.url, any_backend.queue, ledger, options)
    second, _ = build(any_backend.url, any_backend.queue, ledger, options)
    async with first, second:
        await tasks.work.submit_many([{"i": i, "ms": 3500} for i in range(2)])
        await wait_until(lambda: len(ledger.done()) >= 2, 20.0, "the long jobs finished")
    await first.aclose()
    await second.aclose()
    result = verdict(ledger, range(2)).check(max_duplicates=0)
    starts = len(ledger.entries("S"))
    report("long-job", any_backend.name, jobs=2, starts=starts, duplicates=result.duplicates)
    assert starts == 2, "a job was started again while its first run held the lease"
