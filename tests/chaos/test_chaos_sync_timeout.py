"""Scenario 13: a blocking sync task that overruns its timeout stalls nothing else.

One worker runs two sync tasks that block past their timeout (one in
`time.sleep`, one in a pure-Python busy loop holding the GIL), an async job
longer than the lease, and a burst of short jobs. The lease (2 s) is shorter
than the timeout (2.5 s) and than the overrun (2.5 s more), so a heartbeat
held up by the blocking tasks would lose a lease: the job would be cancelled
here and run again. (With a 1 s lease the busy loop's GIL convoy alone, each
socket call waiting out a 5 ms switch interval, stalled the loop up to 0.7 s
on a 2-core CI machine: heartbeat gaps of 0.86 s and leases lost on Redis.)
The worker runs in-process (as on memory://) so its heartbeat calls can be
timed; RabbitMQ has no timed leases, so no heartbeat there. The same short
run in CI and under UPNEXT_CHAOS_FULL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import upnext
from chaoskit.backends import Backend
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import spawn, wait_until
from chaoskit.worker import Options, Tasks, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

LEASE, TIMEOUT, BLOCK = 2.0, 2.5, 5.0  # the body would overrun its timeout by 2.5 s > the lease
LONG_MS = 5_500.0  # an async job beside them, running past the overrun
SHORT_JOBS, SHORT_MS = 30, 10.0
MARKED_WITHIN = 0.25  # the attempt record's end, past started + timeout
CALLER_WITHIN = 0.5  # the caller's TaskTimeoutError, past started + timeout
BLOCKERS = {-1: "sleep", -2: "spin"}
LONG = -3
# Heartbeats tick every lease/3; the bar is that each lease is extended before it runs
# out. A loop held by the blocking tasks would show a gap of the whole 2.5 s overrun.
GAP_WITHIN = LEASE
STUCK_S, FATAL_TIMEOUT = 120.0, 0.3  # threads that never return while the test watches
EXIT_WITHIN = 4.0  # from the fatal timeout to the process's exit
EXIT_RESTART = 75  # upnext.run's "restart me" (EX_TEMPFAIL)


async def _time_heartbeats(worker: upnext.Worker, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the monotonic time of each of the worker's lease extensions."""
    broker = (await worker.client()).broker
    extend = broker.extend
    beats: list[float] = []

    async def timed(deliveries: Sequence[Any], *, lease: float) -> Any:
        beats.append(time.monotonic())
        return await extend(deliveries, lease=lease)

    monkeypatch.setattr(broker, "extend", timed)
    return beats


async def _caller_sees_timeout(future: upnext.Future[None]) -> tuple[float, bool]:
    """When the caller got TaskTimeoutError (wall clock), and whether it says timed out."""
    try:
        await future.result(timeout=15.0)
    except upnext.TaskTimeoutError as exc:
        info = exc.task_result.error_info
        return time.time(), info is not None and info.timed_out
    raise AssertionError(f"job {future.job_id} did not time out")


async def _drive(
    tasks: Tasks, ledger: Ledger
) -> tuple[list[upnext.Future[None]], list[tuple[float, bool]]]:
    """Block two threads, run a long and SHORT_JOBS short jobs beside them; wait for all."""
    blocked = [await tasks.block.submit(i=i, seconds=BLOCK, how=h) for i, h in BLOCKERS.items()]
    await tasks.work.submit(i=LONG, ms=LONG_MS)
    wanted = {*BLOCKERS, LONG}
    await wait_until(lambda: {e.index for e in ledger.entries("S")} >= wanted, 10.0, "all started")
    await tasks.work.submit_many([{"i": i, "ms": SHORT_MS} for i in range(SHORT_JOBS)])
    await wait_until(lambda: ledger.done() >= set(range(SHORT_JOBS)), 10.0, "the short jobs ran")
    seen = await asyncio.gather(*(_caller_sees_timeout(f) for f in blocked))

    def ended() -> bool:
        return len(ledger.entries("E")) == len(BLOCKERS) and LONG in ledger.done()

    await wait_until(ended, 10.0, "the abandoned threads and the long job ended")
    return blocked, seen


@dataclass(frozen=True, slots=True)
class Seen:
    """What one run showed: the blocking jobs' fate, the worker's state, its heartbeats."""

    blocked: list[upnext.Future[None]]
    told: list[tuple[float, bool]]
    entries: list[upnext.DeadLetterEntry]
    fatal: str | None
    beats: list[float]
    lost_here: list[str]


def _figures(seen: Seen, ledger: Ledger) -> dict[str, Any]:
    """The run's figures: lateness of the timeouts, the short jobs' margin, heartbeat gaps."""
    starts = {e.index: e.at for e in ledger.entries("S") if e.index in BLOCKERS}
    ends = {e.index: e.at for e in ledger.entries("E")}
    by_job = {e.job_id: e.attempts[0] for e in seen.entries}
    first = [by_job[f.job_id] for f in seen.blocked]  # each blocking job's first attempt
    due = [(a.started or 0.0) + TIMEOUT for a in first]
    short_last = max(e.at for e in ledger.entries("D") if e.index >= 0)
    gaps = [b - a for a, b in itertools.pairwise(seen.beats)]
    return {
        "outcomes": [[a.outcome for a in e.attempts] for e in seen.entries],
        "marked_late_s": _rounded(
            [(a.finished or 0.0) - d for a, d in zip(first, due, strict=True)]
        ),
        "caller_late_s": _rounded([at - d for (at, _), d in zip(seen.told, due, strict=True)]),
        "short_margin_s": min(starts.values()) + TIMEOUT - short_last,
        "heartbeats": len(seen.beats),
        "max_gap_s": max(gaps) if gaps else "n/a",
        "thread_ran_s": _rounded([ends[i] - starts[i] for i in BLOCKERS]),
    }


def _rounded(seconds: list[float]) -> list[float]:
    """To the millisecond, for the report."""
    return [round(s, 3) for s in seconds]


async def _observe(
    backend: Backend,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Seen:
    """Run the scenario on one in-process worker; everything the assertions need."""
    caplog.set_level(logging.WARNING, logger="upnext.worker")
    options = Options(concurrency=6, lease=LEASE, receive_wait=0.2, block_timeout=TIMEOUT)
    worker, tasks = build(backend.url, backend.queue, ledger, options)
    beats = await _time_heartbeats(worker, monkeypatch)
    async with worker:
        blocked, told = await _drive(tasks, ledger)
        entries = (await worker.dlq.list(queue=backend.queue)).items
        fatal = worker.fatal
    await worker.aclose()
    lost = [r.getMessage() for r in caplog.records if "cancelled here" in r.getMessage()]
    return Seen(blocked, told, entries, fatal, beats, lost)


async def test_overrunning_sync_task_times_out_on_time_and_stalls_nothing(
    any_backend: Backend,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Timed out on time; short jobs ran meanwhile; no lease lost, nothing ran twice."""
    seen = await _observe(any_backend, ledger, monkeypatch, caplog)
    figures = _figures(seen, ledger)
    report("sync-timeout", any_backend.name, **figures)
    starts = [e.index for e in ledger.entries("S") if e.index < 0]
    assert sorted(starts) == sorted([*BLOCKERS, LONG]), "a job ran twice (its lease lost?)"
    assert not seen.lost_here, f"leases lost while sync tasks blocked: {seen.lost_here}"
    verdict(ledger, {*range(SHORT_JOBS), LONG}).check(max_duplicates=0)
    assert all(timed_out for _, timed_out in seen.told), "TaskTimeoutError without timed_out"
    assert figures["outcomes"] == [["timeout"]] * len(BLOCKERS)
    assert all(0 <= m <= MARKED_WITHIN for m in figures["marked_late_s"]), "marked late"
    assert all(0 <= c <= CALLER_WITHIN for c in figures["caller_late_s"]), "caller told late"
    assert figures["short_margin_s"] > 0, "the short jobs waited for the blocking tasks"
    assert all(t >= BLOCK - 0.05 for t in figures["thread_ran_s"]), "a thread was cut short"
    assert seen.fatal is None, "two abandoned threads (<= concurrency) must not stop the worker"
    if any_backend.name != "rabbitmq":  # no timed leases there: nothing to extend
        assert figures["max_gap_s"] < GAP_WITHIN, "the heartbeat stalled"


@contextlib.asynccontextmanager
async def _worker_process(
    backend: Backend, ledger: Ledger, options: Options
) -> AsyncIterator[asyncio.subprocess.Process]:
    """One chaos worker subprocess, SIGKILLed on the way out if still alive."""
    proc = await spawn(backend, ledger, options)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _exit_within(proc: asyncio.subprocess.Process, since: float) -> float | None:
    """Seconds from `since` (wall clock) to `proc`'s exit; None if not within EXIT_WITHIN."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), since + EXIT_WITHIN - time.time())
    return None if proc.returncode is None else time.time() - since


async def test_too_many_abandoned_threads_restart_the_worker(
    backend: Backend, ledger: Ledger
) -> None:
    """Concurrency 1, three stuck sync jobs: the second abandoned thread (> concurrency) is
    fatal; the worker starts nothing more and exits 75 promptly, though its threads never end.
    """
    options = Options(concurrency=1, lease=2.0, shutdown_grace=1.0, block_timeout=FATAL_TIMEOUT)
    producer, tasks = build(backend.url, backend.queue, ledger, options)
    await tasks.block.submit_many([{"i": i, "seconds": STUCK_S} for i in range(3)])
    await producer.aclose()
    async with _worker_process(backend, ledger, options) as proc:
        await wait_until(lambda: len(ledger.entries("S")) >= 2, 30.0, "two stuck jobs started")
        exited_after = await _exit_within(proc, ledger.entries("S")[1].at + FATAL_TIMEOUT)
    starts = len(ledger.entries("S"))
    report(
        "sync-fatal",
        backend.name,
        starts=starts,
        exited_after_s="hung" if exited_after is None else exited_after,
    )
    assert exited_after is not None, f"the worker did not exit within {EXIT_WITHIN} s of its fatal"
    assert proc.returncode == EXIT_RESTART
    assert starts == 2, "a job started after the worker declared itself fatal"


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # core's exit, not the broker's
async def test_sigterm_exits_past_an_abandoned_thread(backend: Backend, ledger: Ledger) -> None:
    """One stuck sync job, timed out and abandoned; SIGTERM: the worker exits 0 within its grace
    (plus EXIT_WITHIN), not when the thread ends."""
    options = Options(concurrency=2, lease=2.0, shutdown_grace=1.0, block_timeout=FATAL_TIMEOUT)
    producer, tasks = build(backend.url, backend.queue, ledger, options)
    await tasks.block.submit(i=0, seconds=STUCK_S)
    await producer.aclose()
    async with _worker_process(backend, ledger, options) as proc:
        await wait_until(lambda: len(ledger.entries("S")) >= 1, 30.0, "the stuck job started")
        await asyncio.sleep(FATAL_TIMEOUT + 0.2)  # past its timeout: the thread is abandoned
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        exited_after = await _exit_within(proc, sent)
    report(
        "sync-sigterm",
        backend.name,
        exited_after_s="hung" if exited_after is None else exited_after,
    )
    assert exited_after is not None, f"SIGTERMed worker still running after {EXIT_WITHIN} s"
    assert proc.returncode == 0
