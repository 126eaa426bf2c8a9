"""`JobMetrics`: the middleware that counts jobs per (queue, task), and its snapshot.

Plain Python counters, no dependency: a worker counts, and two readers turn
the counts into Prometheus series: the worker's own exporter
(`Worker(metrics_port=...)`) and the server's ``GET /metrics``, which reads the
snapshot each worker writes into the state store on its tick.

What is counted, per (queue, task):

- `started`: attempts whose body was called and ended with an outcome,
  once settled durably (a run given back at shutdown, cut off by a lost
  lease or whose settle was refused has none, and is counted when it runs
  again);
- `succeeded`, `dead_lettered`, `cancelled`: settlements by their status;
- `retried`: attempts that ran and were settled for another try;
- `failed`: attempts that ran and did not succeed (error, timeout, `Retry`,
  `Reject`; a user cancel is not a failure);
- `run_seconds`: how long each body's call took, the other middleware's
  `around_run` included (inside the task's timeout);
- `wait_seconds`: from the time the job became waiting (its enqueue, or the
  end of its previous attempt) to its start; a delay it was submitted or
  retried with is part of it.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final

from pydantic import BaseModel, ConfigDict

from upnext.broker.state import STATE_VALUE_MAX
from upnext.middleware._base import Middleware

if TYPE_CHECKING:
    from upnext._serializer import JobBody
    from upnext._settlement import Settlement
    from upnext.middleware._types import Job, Outcome

__all__ = [
    "RUN_BUCKETS",
    "WAIT_BUCKETS",
    "HistogramSnapshot",
    "JobMetrics",
    "MetricsSnapshot",
    "SeriesSnapshot",
]

RUN_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the run-duration histogram's buckets (+Inf is implied)."""

WAIT_BUCKETS: Final = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
"""Upper bounds (seconds) of the wait-time histogram's buckets (+Inf is implied)."""

_FAILED: Final = "upnext.metrics.failed"  # job.state key: the attempt ran and failed

log = logging.getLogger("upnext.metrics")


class HistogramSnapshot(BaseModel):
    """A histogram's counts per bucket (not cumulative; the last is +Inf) and its sum."""

    model_config = ConfigDict(frozen=True)

    counts: list[int]
    sum: float


class SeriesSnapshot(BaseModel):
    """The counts of one (queue, task) pair."""

    model_config = ConfigDict(frozen=True)

    queue: str
    task: str
    started: int
    succeeded: int
    failed: int
    retried: int
    dead_lettered: int
    cancelled: int
    run: HistogramSnapshot
    wait: HistogramSnapshot


class MetricsSnapshot(BaseModel):
    """Every count of one worker at one moment, as its tick writes it to the state store."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    taken_at: float
    run_buckets: list[float]
    wait_buckets: list[float]
    series: list[SeriesSnapshot]


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(counts=list(self.counts), sum=self.total)


class _Series:
    __slots__ = (
        "cancelled",
        "dead_lettered",
        "failed",
        "retried",
        "run",
        "started",
        "succeeded",
        "wait",
    )

    def __init__(self, run_buckets: Sequence[float], wait_buckets: Sequence[float]) -> None:
        self.started = self.succeeded = self.failed = 0
        self.retried = self.dead_lettered = self.cancelled = 0
        self.run = _Histogram(run_buckets)
        self.wait = _Histogram(wait_buckets)


def _waiting_since(body: JobBody | None) -> float | None:
    """When the job became waiting: its previous attempt's end, else its enqueue."""
    if body is None:
        return None
    if body.history and (finished := body.history[-1].finished) is not None:
        return finished
    return body.enqueued_at or None  # 0: a body from before enqueued_at was written


class JobMetrics(Middleware):
    """Counts started, succeeded, failed, retried, dead-lettered and cancelled jobs per task.

    Added by `Worker(metrics=True)`, whose executor counts each job in its
    fixed tail once the settlement is durable (`count`: the attempt's
    `Outcome`, then the settlement), not as a stage; `snapshot()` reads the
    counts. A few integer additions per job on the event loop, no lock, no
    I/O, no dependency. Given in `Worker(middleware=[...])` instead, it counts
    as middleware: each attempt in `after_run`, each settlement inline in
    `after_settle` (`settles_inline`).
    """

    settles_inline: ClassVar[bool] = True  # counting never awaits: no background task per job

    def __init__(
        self,
        *,
        run_buckets: Sequence[float] = RUN_BUCKETS,
        wait_buckets: Sequence[float] = WAIT_BUCKETS,
    ) -> None:
        for name, bounds in (("run_buckets", run_buckets), ("wait_buckets", wait_buckets)):
            if not bounds or list(bounds) != sorted(set(bounds)):
                raise ValueError(f"{name} must be increasing and not empty, got {bounds!r}")
        self.run_buckets = tuple(float(b) for b in run_buckets)
        self.wait_buckets = tuple(float(b) for b in wait_buckets)
        self._series: dict[tuple[str, str], _Series] = {}
        self._cut_warned = False

    def _of(self, job: Job) -> _Series:
        key = (job.queue, job.function)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.run_buckets, self.wait_buckets)
        return series

    def count(self, job: Job, outcome: Outcome | None, settlement: Settlement) -> None:
        """Count a durable settlement and, if the body ran, its attempt (`outcome`).

        What `Worker(metrics=True)`'s executor calls in its fixed tail, in the
        job's own task: no stage, no coroutine per job.
        """
        series = self._series.get((job.queue, job.function)) or self._of(job)
        failed = outcome is not None and self._count_attempt(series, outcome)
        self._count_settled(series, settlement.status, failed)

    async def after_run(self, job: Job, outcome: Outcome) -> None:
        """Count the attempt, its wait and run time, and (from its kind) a failure."""
        series = self._series.get((job.queue, job.function)) or self._of(job)
        if self._count_attempt(series, outcome):
            job.state[_FAILED] = True  # only failures make a state dict: not the hot path

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        """Count the settlement by its status (a retry only after a failed attempt)."""
        series = self._series.get((job.queue, job.function)) or self._of(job)
        self._count_settled(series, settlement.status, job.state.get(_FAILED, False))

    @staticmethod
    def _count_attempt(series: _Series, outcome: Outcome) -> bool:
        """Count one attempt that ran; True if it failed."""
        # Once per attempt on the event loop: written out (no helper calls) to stay cheap.
        series.started += 1
        started = outcome.started
        ran = outcome.finished - started
        series.run.observe(ran if ran > 0.0 else 0.0)
        body = outcome.body
        since = _waiting_since(body) if body.history else body.enqueued_at
        if since:  # 0: a body from before enqueued_at was written
            waited = started - since
            series.wait.observe(waited if waited > 0.0 else 0.0)
        kind = outcome.kind
        if kind != "success" and kind != "cancelled":
            series.failed += 1
            return True
        return False

    @staticmethod
    def _count_settled(series: _Series, status: str, failed: bool) -> None:
        if status == "complete":
            series.succeeded += 1
        elif status == "failed":
            series.dead_lettered += 1
        elif status == "scheduled" and failed:
            series.retried += 1  # not a Delay decision or a lost-run write-back
        elif status == "cancelled":
            series.cancelled += 1

    def snapshot(self, worker_id: str) -> MetricsSnapshot:
        """Every count now, as one `MetricsSnapshot`."""
        return MetricsSnapshot(
            worker_id=worker_id,
            taken_at=time.time(),
            run_buckets=list(self.run_buckets),
            wait_buckets=list(self.wait_buckets),
            series=[
                SeriesSnapshot(
                    queue=queue,
                    task=task,
                    started=s.started,
                    succeeded=s.succeeded,
                    failed=s.failed,
                    retried=s.retried,
                    dead_lettered=s.dead_lettered,
                    cancelled=s.cancelled,
                    run=s.run.snapshot(),
                    wait=s.wait.snapshot(),
                )
                for (queue, task), s in sorted(self._series.items())
            ],
        )

    def encoded(self, worker_id: str) -> bytes:
        """The snapshot as JSON of at most one state value (64 KiB), for the worker tick.

        Past that (hundreds of (queue, task) pairs), the last series are left
        out of what the server sees, and a warning says so once; the worker's
        own exporter still shows them all.
        """
        snapshot = self.snapshot(worker_id)
        data = snapshot.model_dump_json().encode()
        while len(data) > STATE_VALUE_MAX and snapshot.series:
            keep = len(snapshot.series) * STATE_VALUE_MAX // len(data)
            keep = min(keep, len(snapshot.series) - 1)
            snapshot = snapshot.model_copy(update={"series": snapshot.series[:keep]})
            data = snapshot.model_dump_json().encode()
            if not self._cut_warned:
                self._cut_warned = True
                log.warning(
                    "metrics of %d (queue, task) pairs do not fit one state value: the server"
                    " sees %d of them (the worker's --metrics-port exporter shows all)",
                    len(self._series),
                    keep,
                )
        return data
