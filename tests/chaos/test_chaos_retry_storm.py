"""Scenario 8: a retry storm of always-failing jobs: exact executions, full DLQ, delays kept."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
import upnext
from chaoskit import FULL
from chaoskit.backends import Backend
from chaoskit.ledger import Ledger, report
from chaoskit.procs import Pool, wait_until
from chaoskit.worker import Options, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600 if FULL else 90)]

JOBS, RETRIES, DELAY = (5_000, 5, 1.0) if FULL else (60, 5, 0.3)


async def _dead_letters(producer: upnext.Worker, queue: str) -> list[upnext.DeadLetterEntry]:
    entries: list[upnext.DeadLetterEntry] = []
    cursor: str | None = None
    while True:
        page = await producer.dlq.list(limit=500, cursor=cursor, queue=queue)
        entries += page.items
        if page.next_cursor is None:
            return entries
        cursor = page.next_cursor


async def _run(backend: Backend, ledger: Ledger, options: Options, executions: int) -> float:
    """Run the storm in a pool of workers (or in-process on memory://); seconds taken."""

    def storm_over() -> bool:
        return len(ledger.entries("F")) >= executions

    producer, tasks = build(backend.url, backend.queue, ledger, options)
    started = time.monotonic()
    if backend.name == "memory":
        async with producer:
            await tasks.fail.submit_many([{"i": i} for i in range(JOBS)])
            await wait_until(storm_over, 120.0, "every execution ran")
            await asyncio.sleep(0.2)  # the last dead letters are written after the runs
    else:
        await tasks.fail.submit_many([{"i": i} for i in range(JOBS)])
        await producer.aclose()
        async with Pool(backend, ledger, options, 2) as pool:
            await wait_until(storm_over, 300.0, "every execution ran")
            await pool.stop()
    return time.monotonic() - started


async def test_retry_storm_runs_exactly_and_dead_letters_all(
    any_backend: Backend, ledger: Ledger
) -> None:
    """N always-failing jobs with 5 retries: N*6 executions, N DLQ entries of 6 attempts."""
    options = Options(concurrency=16, retries=RETRIES, retry_delay=DELAY)
    executions = JOBS * (RETRIES + 1)
    took = await _run(any_backend, ledger, options, executions)
    producer, _ = build(any_backend.url, any_backend.queue, ledger, options)
    await asyncio.sleep(0.5)  # stray extra executions would show up here
    entries = await _dead_letters(producer, any_backend.queue)
    await producer.aclose()
    runs: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for e in ledger.entries("F"):
        runs[e.index].append((e.attempt, e.at))
    gaps = [
        b[1] - a[1] for r in runs.values() for a, b in zip(sorted(r), sorted(r)[1:], strict=False)
    ]
    report(
        "retry-storm",
        any_backend.name,
        jobs=JOBS,
        executions=sum(map(len, runs.values())),
        dlq=len(entries),
        min_gap=min(gaps),
        max_gap=max(gaps),
        seconds=took,
    )
    assert sum(map(len, runs.values())) == executions
    assert all(sorted(a for a, _ in r) == list(range(1, RETRIES + 2)) for r in runs.values())
    assert len(entries) == JOBS
    assert all(len(e.attempts) == RETRIES + 1 for e in entries)
    assert min(gaps) >= DELAY, "a retry ran before its delay"
