"""Scenario 9: SIGTERM drains a worker: nothing new starts, in-flight jobs finish, the rest go back.

Workers run with max_lost_runs=0, so a job the drain wrongly counted as a lost
run would be dead-lettered at once: an empty DLQ proves releases are uncounted.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from chaoskit import FULL
from chaoskit.backends import Backend
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import spawn, wait_until
from chaoskit.worker import Options, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300 if FULL else 60)]

JOBS = 200 if FULL else 24
# A signal reaches the worker's loop a few ms after os.kill: starts inside this window are allowed.
SIGNAL_SLACK = 0.05


async def _terminate_busy_worker(
    backend: Backend, ledger: Ledger, options: Options
) -> tuple[int, float, float]:
    """Start worker A, SIGTERM it once all its slots run jobs; (pid, SIGTERM time, exit secs)."""
    first = await spawn(backend, ledger, options)

    def busy() -> bool:
        return len([e for e in ledger.entries("S") if e.pid == first.pid]) >= options.concurrency

    await wait_until(busy, 30.0, "worker A filled its slots")
    sent = time.time()
    first.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(first.wait(), options.shutdown_grace + 10.0)
    assert code == 0, f"worker A exited {code}"
    return first.pid, sent, time.time() - sent


async def _drain(
    backend: Backend, ledger: Ledger, options: Options, ms: float, jobs: int
) -> dict[str, float]:
    producer, tasks = build(backend.url, backend.queue, ledger, options)
    await tasks.work.submit_many([{"i": i, "ms": ms} for i in range(jobs)])
    pid, sent, exit_secs = await _terminate_busy_worker(backend, ledger, options)
    second = await spawn(backend, ledger, options)
    try:
        await wait_until(lambda: len(ledger.done()) >= jobs, 60.0, "worker B ran the rest")
        dead = await producer.dlq.count(queue=backend.queue)
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
        await producer.aclose()
    late = [e for e in ledger.entries("S") if e.pid == pid and e.at > sent + SIGNAL_SLACK]
    assert not late, f"worker A started {len(late)} jobs after SIGTERM"
    assert dead == 0, "a released job was counted as a lost run"
    assert all(e.attempt == 1 for e in ledger.entries("D")), "a release counted as an attempt"
    result = verdict(ledger, range(jobs)).check(max_duplicates=0)
    started_by_a = {e.index for e in ledger.entries("S") if e.pid == pid}
    done_by_a = {e.index for e in ledger.entries("D") if e.pid == pid}
    return {
        "jobs": result.jobs,
        "lost": result.lost,
        "duplicates": result.duplicates,
        "a_started": len(started_by_a),
        "a_finished": len(done_by_a),
        "a_exit_s": exit_secs,
    }


async def test_sigterm_finishes_in_flight_and_releases_the_rest(
    backend: Backend, ledger: Ledger
) -> None:
    """Within the grace: A finishes what it started, starts nothing new, exits 0 at once."""
    options = Options(concurrency=4, lease=2.0, shutdown_grace=10.0, max_lost_runs=0)
    figures = await _drain(backend, ledger, options, ms=600, jobs=JOBS)
    report("sigterm-drain", backend.name, **figures)
    assert figures["a_finished"] == figures["a_started"], "an in-flight job was not finished"
    assert figures["a_exit_s"] < 0.6 + 2.0, "A waited for more than its in-flight jobs"


async def test_sigterm_past_the_grace_releases_unfinished_jobs(
    backend: Backend, ledger: Ledger
) -> None:
    """Jobs still running when the grace ends are released, not lost: B runs them once."""
    options = Options(concurrency=4, lease=2.0, shutdown_grace=0.3, max_lost_runs=0)
    figures = await _drain(backend, ledger, options, ms=1500, jobs=JOBS // 3)
    report("sigterm-past-grace", backend.name, **figures)
    assert figures["a_finished"] < figures["a_started"], "the grace must cut jobs short"
    assert figures["a_exit_s"] < 0.3 + 2.0, "A overran its shutdown_grace"
