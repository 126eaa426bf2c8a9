"""Issue 20's flow-control acceptance: rate and per-key concurrency limits over worker processes.

Rate: JOBS jobs of a ``rate_limit="10/s"`` task, queued before WORKERS
processes start: no window of one second holds more than 10 starts (+1 for
clock edges: starts are stamped by each process after its slot was taken),
the run takes about JOBS / 10 s, and every job ran exactly once.

Tenants: TENANT_JOBS jobs for each of tenants a, b and c, a's queued first,
``max_concurrency=2`` per tenant: no tenant ever has more than 2 bodies
running (as the jobs stamp them), and c's first job starts within 1 s of the
first job of the run although a's backlog was queued before it.

Both report the settles that held a job back (``held_back``, and per second).
The short variant runs in the normal suite on each broker (RabbitMQ with a
Redis store for the slots); ``nox -s acceptance`` (``UPNEXT_CHAOS_FULL=1``)
runs issue 20's figures: 4 workers, 300 jobs, 3 x 300 tenant jobs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import upnext
from chaoskit import FULL
from chaoskit.backends import Backend, base_url
from chaoskit.flowworker import RATE, TENANT_LIMIT
from chaoskit.ledger import Entry, Ledger, report
from chaoskit.procs import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600 if FULL else 120)]

WORKERS = 4 if FULL else 2
JOBS = 300 if FULL else 30
TENANT_JOBS = 300 if FULL else 20
_HERE = str(Path(__file__).resolve().parent)


def _results(backend: Backend) -> str | None:
    """RabbitMQ keeps no state: its slots live in Redis, under this run's prefix."""
    if backend.name != "rabbitmq":
        return None
    redis = base_url("redis")
    return f"{redis}{'&' if '?' in redis else '?'}prefix=chaos-{backend.token}"


async def _enqueue(backend: Backend, calls: list[dict[str, object]]) -> None:
    producer = upnext.Worker(
        backend.queue, backend.url, results=_results(backend), load_plugins=False
    )

    async def work(**_: object) -> None: ...

    task = producer.task(name=f"{backend.queue}.work")(work)
    try:
        for start in range(0, len(calls), 100):
            await task.submit_many(calls[start : start + 100])
    finally:
        await producer.aclose()


async def _run(backend: Backend, ledger: Ledger, mode: str, jobs: int) -> None:
    """WORKERS processes in `mode` until every job is done, then stopped."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_HERE, os.environ.get("PYTHONPATH", "")]))
    argv = ["--url", backend.url, "--queue", backend.queue, "--ledger", str(ledger.path)]
    argv += ["--mode", mode]
    results = _results(backend)
    argv += ["--results", results] if results else []
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chaoskit.flowworker", *argv, env=env
        )
        for _ in range(WORKERS)
    ]
    try:
        await wait_until(lambda: ledger.count("D") >= jobs, 300.0 if FULL else 60.0, "all done")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 60.0)


def _most_in_a_second(starts: list[float]) -> int:
    ordered = sorted(starts)
    return max(sum(1 for t in ordered[i:] if t - first < 1.0) for i, first in enumerate(ordered))


def _most_running(entries: list[Entry]) -> int:
    """The most bodies running at once, from their S and D stamps (an end before a start)."""
    events = sorted((e.at, 0 if e.event == "D" else 1) for e in entries)
    running = most = 0
    for _, starts in events:
        running += 1 if starts else -1
        most = max(most, running)
    return most


async def test_a_rate_limit_holds_across_worker_processes(backend: Backend, ledger: Ledger) -> None:
    await _enqueue(backend, [{"i": i} for i in range(JOBS)])
    await _run(backend, ledger, "rate", JOBS)
    starts = [e.at for e in ledger.entries("S")]
    done = sorted(e.index for e in ledger.entries("D"))
    took = max(starts) - min(starts)
    most = _most_in_a_second(starts)
    held = ledger.count("Y")
    report(
        "flow-rate",
        backend.name,
        workers=WORKERS,
        jobs=JOBS,
        most_in_a_second=most,
        took_s=took,
        held_back=held,
        held_back_per_s=held / took,
    )
    assert done == list(range(JOBS)), "every job ran exactly once"
    assert most <= RATE + 1, f"at most {RATE} starts in any second (+1 at an edge), saw {most}"
    expected = JOBS / RATE - 1  # the first RATE start at once
    assert expected * 0.95 <= took <= expected * 1.5 + 2.0, f"took {took:.1f} s, not ~{expected}"


async def test_a_tenant_backlog_does_not_hold_other_tenants_back(
    backend: Backend, ledger: Ledger
) -> None:
    calls: list[dict[str, object]] = []
    for number, tenant in enumerate("abc"):
        calls += [{"tenant": tenant, "i": number * TENANT_JOBS + i} for i in range(TENANT_JOBS)]
    await _enqueue(backend, calls)
    await _run(backend, ledger, "tenant", len(calls))
    entries = ledger.entries("S") + ledger.entries("D")

    def tenant_of(entry: Entry) -> str:
        return "abc"[entry.index // TENANT_JOBS]

    most = {t: _most_running([e for e in entries if tenant_of(e) == t]) for t in "abc"}
    starts = ledger.entries("S")
    first = min(e.at for e in starts)
    c_waited = min(e.at for e in starts if tenant_of(e) == "c") - first
    took = max(e.at for e in ledger.entries("D")) - first
    held = ledger.count("Y")
    report(
        "flow-tenants",
        backend.name,
        workers=WORKERS,
        jobs=len(calls),
        most_running=max(most.values()),
        c_first_after_s=c_waited,
        took_s=took,
        held_back=held,
        held_back_per_s=held / took,
    )
    assert sorted(e.index for e in ledger.entries("D")) == list(range(len(calls)))
    assert all(n <= TENANT_LIMIT for n in most.values()), f"per tenant at most 2, saw {most}"
    assert c_waited <= 1.0, f"c's first job waited {c_waited:.2f} s behind a's backlog"
