"""Issue 19's cron acceptance: 4 worker processes, an every-second cron, a SIGKILL, then stops.

Phase 1: four workers (two in the short variant) run ``"* * * * * *"`` for
RUN s; at KILL_AT s one is SIGKILLed (one with a tick in flight, if any) and
restarted. Every tick from the first to the last ran and was settled; the
tick the killed worker held is rerun by another (counted and reported), and a
tick is settled twice only when the killed worker had finished it unsettled.
Phase 2: all workers stop for STOP s, then restart with each missed-run
policy in turn: LATEST_ONLY runs only the latest missed tick, CATCH_UP every
one, SKIP none; the ticks after the restart all run, once.

The short variant runs in the normal suite on each broker (RabbitMQ with a
Redis store for the cursor); ``nox -s acceptance`` (``UPNEXT_CHAOS_FULL=1``)
runs issue 19's figures: 60 s, a kill at 30 s, 10 s stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from chaoskit import FULL
from chaoskit.backends import Backend, base_url, cleanup
from chaoskit.ledger import Ledger, report
from chaoskit.procs import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900 if FULL else 180)]

WORKERS = 4 if FULL else 2  # the short variant's restarts cost less on a small CI machine
RUN, KILL_AT, STOP, AFTER = (60.0, 30.0, 10.0, 5.0) if FULL else (8.0, 4.0, 3.0, 3.0)
_HERE = str(Path(__file__).resolve().parent)


class Fleet:
    """The cron worker processes of one run."""

    def __init__(self, backend: Backend, ledger: Ledger, results: str | None) -> None:
        self.backend, self.ledger, self.results = backend, ledger, results
        self.procs: list[asyncio.subprocess.Process] = []
        self.policy = "CATCH_UP"

    async def spawn(self) -> asyncio.subprocess.Process:
        """One more worker with the current policy."""
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([_HERE, os.environ.get("PYTHONPATH", "")])
        )
        argv = ["--url", self.backend.url, "--queue", self.backend.queue]
        argv += ["--ledger", str(self.ledger.path), "--policy", self.policy]
        argv += ["--results", self.results] if self.results else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chaoskit.cronworker", *argv, env=env
        )
        self.procs.append(proc)
        return proc

    async def start(self, policy: str) -> None:
        """WORKERS workers with `policy`; returns once every scheduler has started."""
        self.policy, self.procs = policy, []
        started = len(self.ledger.entries("A"))
        for _ in range(WORKERS):
            await self.spawn()
        await wait_until(
            lambda: len(self.ledger.entries("A")) >= started + WORKERS, 60.0, "workers started"
        )

    def busy(self) -> set[int]:
        """The pids running a tick now (started, not ended)."""
        starts = {(e.index, e.pid) for e in self.ledger.entries("S")}
        ends = {(e.index, e.pid) for e in self.ledger.entries("D")}
        return {pid for _, pid in starts - ends}

    async def kill_one(self) -> tuple[int, float]:
        """SIGKILL a worker running a tick (any, if none does within 2 s) and start another."""
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: bool(self.busy()), 2.0, "a tick in flight")
        busy = self.busy()
        live = [p for p in self.procs if p.returncode is None]
        victim = next((p for p in live if p.pid in busy), live[0])
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed_at = time.time()
        await self.spawn()
        return victim.pid, killed_at

    async def stop(self) -> None:
        """SIGTERM every worker; each drains and exits."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self.procs)), 60.0)


def held_by(ledger: Ledger, pid: int, killed_at: float) -> set[int]:
    """Ticks `pid` held at its kill: started there and unfinished, or finished in its last 0.5 s."""
    started = {e.index for e in ledger.entries("S") if e.pid == pid}
    done = [e for e in ledger.entries("D") if e.pid == pid]
    recent = {e.index for e in done if e.at > killed_at - 0.5}
    return (started - {e.index for e in done}) | recent


def settled(ledger: Ledger, after: int = 0) -> Counter[int]:
    """How many times each tick after `after` was settled (its run ended)."""
    return Counter(e.index for e in ledger.entries("D") if e.index > after)


def _results(backend: Backend) -> str | None:
    """RabbitMQ keeps no state: its cursor lives in Redis, under this run's prefix."""
    if backend.name != "rabbitmq":
        return None
    return (
        f"{base_url('redis')}{'&' if '?' in base_url('redis') else '?'}prefix=chaos-{backend.token}"
    )


async def _kill_phase(fleet: Fleet, ledger: Ledger, backend: Backend) -> int:
    """Phase 1; the last tick it ran."""
    await fleet.start("CATCH_UP")
    await wait_until(lambda: bool(ledger.entries("D")), 30.0, "the cron ran")
    began = time.monotonic()
    await asyncio.sleep(KILL_AT)
    pid, killed_at = await fleet.kill_one()
    await asyncio.sleep(max(0.0, RUN - (time.monotonic() - began)))
    await fleet.stop()
    counts = settled(ledger)
    first, last = min(counts), max(counts)
    missing = [t for t in range(first, last + 1) if t not in counts]
    held = held_by(ledger, pid, killed_at)
    reruns = {t: n - 1 for t, n in counts.items() if n > 1}
    rerun = {e.index for e in ledger.entries("S") if e.index in held and e.pid != pid}
    report(
        "cron-kill",
        backend.name,
        ticks=last - first + 1,
        missing=len(missing),
        held_at_kill=sorted(held),
        rerun_after_kill=sorted(rerun),
        settled_twice=sorted(reruns),
    )
    assert not missing, f"ticks never settled: {missing}"
    assert set(reruns) <= held, f"ticks settled twice the killed worker never held: {reruns}"
    assert all(n == 1 for n in reruns.values()), f"a tick ran more than twice: {reruns}"
    return last


async def _policy_phase(fleet: Fleet, ledger: Ledger, backend: Backend, policy: str) -> None:
    """A stop of STOP s, then a restart with `policy`: which missed ticks ran."""
    before = max(settled(ledger))
    await asyncio.sleep(STOP)
    seen_a = len(ledger.entries("A"))
    await fleet.start(policy)
    await asyncio.sleep(AFTER)
    await fleet.stop()
    starts = [e.at for e in ledger.entries("A")[seen_a:]]
    first_up, last_up = min(starts), max(starts)
    counts = settled(ledger, before)
    ran = sorted(counts)
    missed = range(before + 1, int(first_up) + 1)  # ticks before any scheduler ran
    ran_missed = [t for t in ran if t in missed]
    report(
        f"cron-{policy.lower()}",
        backend.name,
        stopped_ticks=len(missed),
        ran_missed=ran_missed,
        ran_after=len([t for t in ran if t > last_up]),
    )
    assert all(n == 1 for n in counts.values()), f"{policy}: a tick ran twice: {counts}"
    if policy == "CATCH_UP":
        assert ran_missed == list(missed), f"CATCH_UP ran every missed tick: {ran_missed}"
    elif policy == "LATEST_ONLY":
        assert [t for t in ran if t <= first_up - 1] == [], f"only the latest ran: {ran}"
        assert any(t <= last_up for t in ran), f"LATEST_ONLY ran the latest missed tick: {ran}"
    else:
        assert ran_missed == [], f"SKIP ran no missed tick: {ran_missed}"
    after = [t for t in range(int(last_up) + 2, max(ran) + 1)]
    assert all(t in counts for t in after), f"{policy}: every tick after the restart ran: {ran}"


async def test_cron_fires_each_tick_once_through_a_kill_and_follows_each_policy(
    backend: Backend, ledger: Ledger
) -> None:
    """Issue 19's Done-when for cron (see the module docstring)."""
    results = _results(backend)
    fleet = Fleet(backend, ledger, results)
    try:
        await _kill_phase(fleet, ledger, backend)
        for policy in ("LATEST_ONLY", "CATCH_UP", "SKIP"):
            await _policy_phase(fleet, ledger, backend, policy)
    finally:
        for proc in fleet.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if results is not None:
            await cleanup(dataclasses.replace(backend, name="redis", base=base_url("redis")))
