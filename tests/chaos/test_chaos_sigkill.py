"""Scenarios 1 and 2: workers SIGKILLed at random, and a job that kills its worker every time."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest
import upnext
from chaoskit import FULL
from chaoskit.backends import Backend
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import Pool, wait_until
from chaoskit.worker import Options, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300 if FULL else 90)]

# Issue 9 figures, and the short CI variant.
KILL_JOBS, KILL_WORKERS, KILL_EVERY, KILL_FOR = (
    (10_000, 4, 2.0, 60.0) if FULL else (2_000, 2, 1.0, 4.0)
)
CRASH_OTHERS = 1_000 if FULL else 100


def in_flight_at(ledger: Ledger, pid: int, killed_at: float) -> int:
    """Jobs `pid` held at its kill: started and unfinished, or finished in its last 0.5 s."""
    started = {e.index for e in ledger.entries("S") if e.pid == pid}
    done = [e for e in ledger.entries("D") if e.pid == pid]
    recent = {e.index for e in done if e.at > killed_at - 0.5}
    return len(started - {e.index for e in done}) + len(recent)


async def _kill_loop(pool: Pool, ledger: Ledger, jobs: int) -> list[tuple[int, float]]:
    """Kill a random worker every KILL_EVERY s for KILL_FOR s (while jobs remain); restart it."""
    kills: list[tuple[int, float]] = []
    deadline = time.monotonic() + KILL_FOR
    while time.monotonic() < deadline and len(ledger.done()) < jobs:
        await asyncio.sleep(KILL_EVERY)
        working = {e.pid for e in ledger.entries("S")}
        busy = [p for p in pool.procs if p.returncode is None and p.pid in working]
        if not busy:  # still importing: killing it would test nothing
            continue
        victim = random.choice(busy)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        kills.append((victim.pid, time.time()))
        await pool.restart_dead()
    return kills


async def test_random_sigkills_lose_nothing(backend: Backend, ledger: Ledger) -> None:
    """Workers SIGKILLed every few seconds: all jobs complete; duplicates <= jobs held at kills."""
    options = Options(concurrency=8, lease=2.0)
    producer, tasks = build(backend.url, backend.queue, ledger, options)
    rng = random.Random(9)
    await tasks.work.submit_many([{"i": i, "ms": rng.uniform(5, 50)} for i in range(KILL_JOBS)])
    started = time.monotonic()
    async with Pool(backend, ledger, options, KILL_WORKERS) as pool:
        await wait_until(lambda: len(ledger.done()) > 0, 30.0, "the workers got going")
        kills = await _kill_loop(pool, ledger, KILL_JOBS)
        last_kill = time.monotonic()
        await wait_until(lambda: len(ledger.done()) >= KILL_JOBS, 120.0, "every job completed")
        recovery = time.monotonic() - last_kill
        dead_letters = await producer.dlq.count(queue=backend.queue)
        await pool.stop()
    await producer.aclose()
    held = sum(in_flight_at(ledger, pid, at) for pid, at in kills)
    result = verdict(ledger, range(KILL_JOBS)).check(max_duplicates=held)
    report(
        "sigkill",
        backend.name,
        jobs=result.jobs,
        kills=len(kills),
        lost=result.lost,
        duplicates=result.duplicates,
        held_at_kills=held,
        dlq=dead_letters,
        seconds=time.monotonic() - started,
        drain_after_last_kill=recovery,
    )
    assert kills, "the kills must fall in the middle of the run"
    assert held > 0, "the killed workers must have held jobs"
    assert dead_letters == 0


async def _until_dead_lettered(producer: upnext.Worker, pool: Pool, queue: str) -> None:
    deadline = time.monotonic() + 60.0
    while await producer.dlq.count(queue=queue) == 0:
        assert time.monotonic() < deadline, "the crashing job never reached the DLQ"
        await pool.restart_dead()
        await asyncio.sleep(0.1)  # the supervisor's restart delay


async def test_crash_loop_job_is_dead_lettered_as_worker_lost(
    backend: Backend, ledger: Ledger
) -> None:
    """A job calling os._exit runs 1 + max_lost_runs times, then dead-letters; the rest complete.

    Jobs held beside the crasher when it kills its worker are charged that
    lost run too; a job on its last chance (the crasher's fourth run, or a
    neighbour's) runs alone, so only the crasher reaches the DLQ: exactly the
    crasher, reason "worker lost", and every other job completes.
    """
    options = Options(concurrency=4, lease=1.0, max_lost_runs=3)
    producer, tasks = build(backend.url, backend.queue, ledger, options)
    half = CRASH_OTHERS // 2
    await tasks.work.submit_many([{"i": i, "ms": 20} for i in range(half)])
    crash = await tasks.crash.submit(i=-1)
    await tasks.work.submit_many([{"i": i, "ms": 20} for i in range(half, CRASH_OTHERS)])
    started = time.monotonic()
    async with Pool(backend, ledger, options, 2) as pool:
        await _until_dead_lettered(producer, pool, backend.queue)
        await pool.supervise(lambda: len(ledger.done()) >= CRASH_OTHERS, 120.0)
        seconds = time.monotonic() - started
        page = await producer.dlq.list(queue=backend.queue, limit=500)
        await pool.stop()
    await producer.aclose()
    result = verdict(ledger, range(CRASH_OTHERS))
    runs = [e for e in ledger.entries("S") if e.index == -1]
    report(
        "crash-loop",
        backend.name,
        crasher_runs=len(runs),
        deaths=pool.deaths,
        others=CRASH_OTHERS,
        others_completed=CRASH_OTHERS - result.lost,
        dlq=len(page.items),
        duplicates=result.duplicates,
        seconds=seconds,
    )
    # Only jobs a worker held when the crasher took it down beside them can run
    # again: running, or finished and not yet settled (concurrency + a prefetch
    # as big), at each of the crasher's runs before its last, lonely one.
    result.check(max_duplicates=options.max_lost_runs * 2 * options.concurrency)
    assert [e.job_id for e in page.items] == [crash.job_id], "only the crasher is dead-lettered"
    [entry] = page.items
    assert entry.reason == "worker lost"
    assert [a.outcome for a in entry.attempts] == ["lost"] * (1 + options.max_lost_runs)
    assert len(runs) == 1 + options.max_lost_runs
