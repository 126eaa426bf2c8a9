"""Issue 10, case 2: a frozen broker host. Every call has a deadline, reconnects included.

The broker sits behind a relay process (`chaoskit.relay`) that is stopped with
SIGSTOP: its connections stay open and the kernel still accepts new ones, but
nothing is read or answered, as with a paused container or a frozen VM. A
connected producer's submit and dead-letter count must raise
BrokerUnavailable within the backend's deadline (at most 15 s at the
defaults); a running worker must notice (a failed receive is logged) instead
of waiting for ever; and once the relay thaws, the worker resumes and every
acknowledged job completes (at least once: reruns of the jobs in flight at
the freeze are counted, and bounded). The full run keeps every default; the
short one tightens the timeouts by URL so the same paths take seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest
import upnext
from chaoskit import FULL
from chaoskit.backends import Backend, server_address, through
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import spawn, wait_until
from chaoskit.relay import Relay
from chaoskit.worker import Options, Tasks, build
from upnext.errors import BrokerUnavailable

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300 if FULL else 120)]

IN_FLIGHT = 3  # 1.5 s jobs running at the freeze
PROBES = 5  # jobs submitted after the thaw
# Short variant: the same paths with shorter timeouts, and the deadlines they give.
FAST = {
    "redis": "socket_timeout=1&socket_connect_timeout=1&recovery_interval=1",
    "rabbitmq": "heartbeat=1",
    "postgres": "connect_timeout=2&command_timeout=1&lease_recovery_interval=1",
}
BOUND = {"redis": 2.5, "rabbitmq": 11.0, "postgres": 3.5}
DEFAULT_BOUND = 15.0
NOTICE_SLACK = 5.0  # a worker's call in progress at the freeze (a blocking receive) ends later
RESUME_BOUND = 20.0 if FULL else 10.0  # thaw -> first job done after it


def _tuned(backend: Backend) -> Backend:
    if FULL:
        return backend
    sep = "&" if "?" in backend.url else "?"
    return replace(backend, url=f"{backend.url}{sep}{FAST[backend.name]}")


async def _timed(call: Callable[[], Awaitable[object]], bound: float) -> float:
    """Seconds until `call` raised BrokerUnavailable (AssertionError if it returned)."""
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(call(), 4 * bound)  # a hang fails here, as TimeoutError
    return time.monotonic() - started


async def _lines(stream: asyncio.StreamReader, into: list[tuple[float, str]]) -> None:
    while line := await stream.readline():
        into.append((time.time(), line.decode().rstrip("\n")))


@dataclass(slots=True)
class Run:
    """What one freeze showed: the producer's times, the worker's, and the jobs."""

    calls: dict[str, float] = field(default_factory=dict)
    noticed: float = -1.0
    resumed: float = -1.0
    acknowledged: set[int] = field(default_factory=set)
    ambiguous: set[int] = field(default_factory=set)


async def test_a_frozen_broker_fails_calls_on_time_and_loses_nothing(
    backend: Backend, ledger: Ledger
) -> None:
    """Producer calls raise within the bound; the worker notices, resumes and loses nothing."""
    options = Options(concurrency=IN_FLIGHT)
    bound = DEFAULT_BOUND if FULL else BOUND[backend.name]
    async with Relay(*server_address(backend)) as relay:
        tuned = through(_tuned(backend), relay.port)
        producer, tasks = build(tuned.url, backend.queue, ledger, options)
        worker = await spawn(tuned, ledger, options, capture=True)
        assert worker.stderr is not None
        logged: list[tuple[float, str]] = []
        reader = asyncio.create_task(_lines(worker.stderr, logged))
        try:
            run = await _freeze_and_thaw(relay, tasks, producer, ledger, logged, bound)
            dead = await producer.dlq.count(queue=backend.queue)
        finally:
            relay.thaw()
            worker.terminate()
            await asyncio.wait_for(worker.wait(), 60.0)
            await reader
            await producer.aclose()
    _judge(backend.name, ledger, run, dead, bound)


async def _freeze_and_thaw(
    relay: Relay,
    tasks: Tasks,
    producer: upnext.Worker,
    ledger: Ledger,
    logged: list[tuple[float, str]],
    bound: float,
) -> Run:
    """Freeze with jobs in flight, time the producer's calls, watch the worker, thaw, probe."""
    run = Run(acknowledged=set(range(IN_FLIGHT)), ambiguous={900, 901})
    await tasks.work.submit_many([{"i": i, "ms": 1500} for i in range(IN_FLIGHT)])
    await wait_until(lambda: len(ledger.entries("S")) >= IN_FLIGHT, 30.0, "the jobs started")
    frozen_at = time.time()
    relay.freeze()
    run.calls["submit"] = await _timed(lambda: tasks.work.submit(i=900), bound)
    run.calls["dlq_count"] = await _timed(lambda: producer.dlq.count(), bound)
    run.calls["submit_again"] = await _timed(lambda: tasks.work.submit(i=901), bound)
    await wait_until(lambda: _noticed(logged, frozen_at) > 0, 60.0, "the worker noticed")
    run.noticed = _noticed(logged, frozen_at)
    relay.thaw()
    thawed_at = time.time()
    probes = [1000 + k for k in range(PROBES)]
    await tasks.work.submit_many([{"i": i, "ms": 10} for i in probes])
    run.acknowledged |= set(probes)
    within = RESUME_BOUND + 30.0
    await wait_until(lambda: ledger.done() >= run.acknowledged, within, "every job completed")
    run.resumed = min(e.at for e in ledger.entries("D") if e.index in probes) - thawed_at
    return run


def _noticed(logged: list[tuple[float, str]], since: float) -> float:
    """Seconds from `since` to the worker's first failed-call warning; -1.0 if none yet."""
    times = [at for at, line in logged if at > since and "failed" in line]
    return min(times) - since if times else -1.0


def _judge(name: str, ledger: Ledger, run: Run, dead: int, bound: float) -> None:
    # A submit that raised may still have reached the server (its bytes were
    # sent before the freeze was noticed): it may run, once, or not at all.
    result = verdict(ledger, run.acknowledged | (ledger.done() & run.ambiguous))
    report(
        "frozen",
        name,
        **run.calls,
        bound=bound,
        worker_noticed_after=run.noticed,
        resumed_after_thaw=run.resumed,
        jobs=result.jobs,
        lost=result.lost,
        duplicates=result.duplicates,
        dlq=dead,
    )
    for call, seconds in run.calls.items():
        assert seconds <= bound, f"{call} raised BrokerUnavailable after {seconds:.1f} s"
    assert run.noticed <= bound + NOTICE_SLACK, f"the worker noticed after {run.noticed:.1f} s"
    assert run.resumed <= RESUME_BOUND, f"the worker resumed {run.resumed:.1f} s after the thaw"
    assert dead == 0
    result.check(max_duplicates=IN_FLIGHT + len(run.ambiguous))
