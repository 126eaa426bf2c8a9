"""Scenario 11: a long steady load loses nothing, duplicates nothing, and does not grow the workers.

Every worker's RSS is read from /proc when the ledger passes half the jobs
and again at the end. The 10% bar is asserted in the full run only (50,000
jobs); the short run (5,000) asserts lost = duplicates = 0 and reports the
RSS, see docs/reliability.md for why.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from chaoskit import FULL
from chaoskit.backends import Backend
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import Pool, rss_kib, wait_until
from chaoskit.worker import Options, Tasks, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900 if FULL else 120)]

# Issue 9 figures, and the short CI variant.
JOBS, WORKERS = (50_000, 4) if FULL else (5_000, 4)
JOB_MS = 1.0  # each job far shorter than the 2 s lease
RSS_GROWTH = 0.10
SUBMIT_BATCH = 1_000


async def _submit(tasks: Tasks, jobs: int) -> None:
    for start in range(0, jobs, SUBMIT_BATCH):
        stop = min(start + SUBMIT_BATCH, jobs)
        await tasks.work.submit_many([{"i": i, "ms": JOB_MS} for i in range(start, stop)])


async def _rss_at_half_and_end(pool: Pool, ledger: Ledger, within: float) -> list[list[int]]:
    """Each worker's RSS (KiB) once the ledger passes JOBS/2 completions, and at JOBS."""
    samples: list[list[int]] = []
    deadline = time.monotonic() + within
    for mark in (JOBS // 2, JOBS):
        while ledger.count("D") < mark:
            assert time.monotonic() < deadline, f"{ledger.count('D')} of {JOBS} done in {within} s"
            assert all(p.returncode is None for p in pool.procs), "a worker died under load"
            await asyncio.sleep(0.1)  # the jobs run in the workers
        samples.append([rss_kib(p.pid) for p in pool.procs])
    return samples


async def test_load_loses_nothing_and_holds_rss(backend: Backend, ledger: Ledger) -> None:
    """JOBS short jobs through WORKERS workers: lost 0, duplicates 0, RSS flat from half to end."""
    options = Options(concurrency=8, lease=2.0)
    producer, tasks = build(backend.url, backend.queue, ledger, options)
    started = time.monotonic()
    await _submit(tasks, JOBS)
    submitted = time.monotonic() - started
    async with Pool(backend, ledger, options, WORKERS) as pool:
        half, end = await _rss_at_half_and_end(pool, ledger, 600.0 if FULL else 90.0)
        drained = time.monotonic() - started - submitted
        await wait_until(lambda: len(ledger.done()) >= JOBS, 30.0, "every job completed once")
        await asyncio.sleep(0.5)  # a stray second run would land here
        dead_letters = await producer.dlq.count(queue=backend.queue)
        await pool.stop()
    await producer.aclose()
    result = verdict(ledger, range(JOBS)).check(max_duplicates=0)
    growth = [(e - h) / h for h, e in zip(half, end, strict=True)]
    report(
        "load",
        backend.name,
        jobs=result.jobs,
        workers=WORKERS,
        lost=result.lost,
        duplicates=result.duplicates,
        dlq=dead_letters,
        rss_half_kib=half,
        rss_end_kib=end,
        max_rss_growth_pct=100 * max(growth, key=abs),
        submit_s=submitted,
        drain_s=drained,
    )
    assert dead_letters == 0
    if FULL:
        assert all(abs(g) <= RSS_GROWTH for g in growth), f"worker RSS moved > 10%: {growth}"
