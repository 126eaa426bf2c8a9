"""``GET /api/v1/queues/history``: the last hour of queue depths and throughput, in memory.

The server samples every `interval` seconds (5 by default) from its start:
each queue's counts from the broker (as ``/queues``), the jobs workers run on
it and the jobs they finished since the previous sample (from the worker
registry). Samples live in a ring buffer of one hour (`WINDOW`); nothing is
stored, so a restarted server starts an empty chart.

Throughput is the growth of each worker's `finished` counters summed over
workers. A worker seen for the first time counts in full if it started after
sampling began (every job it finished is new), else it only sets its
baseline; a worker gone since the previous sample is dropped (the jobs it
finished after its last tick are not counted); a counter that went down
(never, for one worker id) counts from zero. So no sample is negative, and a
restart never shows a spike of everything a worker ever did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from upnext._durations import check_duration
from upnext.errors import ConfigurationError
from upnext.server._backend import Backend
from upnext.server._models import PRINTABLE, QueueInfo
from upnext.workers import QueueCounts, WorkerInfo, read_registry

__all__ = ["WINDOW", "HistoryPage", "HistorySample", "QueueHistory", "QueuePoint", "Throughput"]

WINDOW = 3600.0
"""Seconds of samples kept (the chart's span)."""

log = logging.getLogger("upnext.server")


class QueuePoint(BaseModel):
    """One queue at one sample; null where the broker or the registry cannot tell.

    `ready`, `scheduled`, `in_flight` and `dead` are the broker's counts;
    `running` the jobs live workers run from it; `processed` and `failed`
    the jobs workers finished (and, of those, failed) since the previous
    sample — null on the first sample and without a worker registry.
    """

    name: str
    ready: int | None
    scheduled: int | None
    in_flight: int | None
    dead: int | None
    running: int | None
    processed: int | None
    failed: int | None


class HistorySample(BaseModel):
    """Every known queue at one instant (the server's clock)."""

    at: datetime
    queues: list[QueuePoint]


class HistoryPage(BaseModel):
    """The samples of the last hour, oldest first, and how they are taken."""

    interval: float
    window: float
    since: datetime
    samples: list[HistorySample]


class Throughput:
    """Turns the workers' ever-growing `finished` counters into per-sample growth."""

    def __init__(self, since: float) -> None:
        self.since = since
        self._seen: dict[str, dict[str, QueueCounts]] | None = None

    def step(self, workers: list[WorkerInfo]) -> dict[str, QueueCounts] | None:
        """What `workers` finished per queue since the previous step; None on the first."""
        first = self._seen is None
        seen = self._seen or {}
        grown: dict[str, list[int]] = {}
        for info in workers:
            before = seen.get(info.worker_id)
            if before is None:  # new: all of it since sampling began, else only from now
                before = {} if info.started_at >= self.since else info.finished
            for queue, now in info.finished.items():
                was = before.get(queue, QueueCounts())
                processed = now.processed - was.processed
                failed = now.failed - was.failed
                if processed < 0 or failed < 0:  # reset: all of it is new
                    processed, failed = now.processed, now.failed
                total = grown.setdefault(queue, [0, 0])
                total[0] += processed
                total[1] += failed
        self._seen = {info.worker_id: info.finished for info in workers}
        if first:
            return None
        return {q: QueueCounts(processed=p, failed=f) for q, (p, f) in grown.items()}


def _running(workers: list[WorkerInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for info in workers:
        for run in info.running:
            if run.queue is not None:
                counts[run.queue] = counts.get(run.queue, 0) + 1
    return counts


class QueueHistory:
    """The ring buffer of samples and the loop that fills it."""

    def __init__(self, backend: Backend, interval: float = 5.0) -> None:
        self.backend = backend
        self.interval = check_duration("history interval", interval, positive=True)
        self.started = time.time()
        self.samples: deque[HistorySample] = deque(maxlen=max(1, int(WINDOW / self.interval)))
        self.throughput = Throughput(self.started)
        self._failures = 0

    async def _workers(self) -> list[WorkerInfo] | None:
        client = await self.backend.worker.client()
        return None if client.state is None else await read_registry(client.state)

    async def sample(self) -> HistorySample:
        """Take one sample now and keep it."""
        stats, workers = await asyncio.gather(self.backend.queue_stats(), self._workers())
        finished = None if workers is None else self.throughput.step(workers)
        running = None if workers is None else _running(workers)
        names = [q.name for q in stats]
        extra = sorted({*(finished or {}), *(running or {})} - set(names))
        unknown = QueueInfo(name="", ready=None, scheduled=None, in_flight=None, dead=None)
        by_name = {q.name: q for q in stats}
        points = []
        for name in [*names, *extra]:
            q = by_name.get(name, unknown)
            done = (finished or {}).get(name, QueueCounts())
            points.append(
                QueuePoint(
                    name=name,
                    ready=q.ready,
                    scheduled=q.scheduled,
                    in_flight=q.in_flight,
                    dead=q.dead,
                    running=None if running is None else running.get(name, 0),
                    processed=None if finished is None else done.processed,
                    failed=None if finished is None else done.failed,
                )
            )
        taken = HistorySample(at=datetime.now(UTC), queues=points)
        self.samples.append(taken)
        return taken

    async def run(self) -> None:
        """Sample every `interval` until cancelled; a failed sample is a gap, logged once."""
        while True:
            try:
                await self.sample()
            except Exception as exc:
                self._failures += 1
                if self._failures == 1:
                    log.warning("queue history: sampling failed (%s); retrying quietly", exc)
            else:
                self._failures = 0
            await asyncio.sleep(self.interval)

    @asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        """Run the sampling loop for the duration of the block (the app's lifespan)."""
        task = asyncio.get_running_loop().create_task(self.run(), name="upnext-history")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def page(self, queue: str | None, after: datetime | None = None) -> HistoryPage:
        """The kept samples (taken after `after`, of `queue` only, if given), oldest first."""
        samples = [s for s in self.samples if after is None or s.at > after]
        if queue is not None:
            samples = [
                s.model_copy(update={"queues": [p for p in s.queues if p.name == queue]})
                for s in samples
            ]
        return HistoryPage(
            interval=self.interval,
            window=WINDOW,
            since=datetime.fromtimestamp(self.started, UTC),
            samples=samples,
        )


history_router = APIRouter(prefix="/api/v1")
# A date and time as the samples' `at` are written; a bare number is not one.
_ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$"


@history_router.get("/queues/history", tags=["queues"])
async def queue_history(
    request: Request,
    queue: Annotated[
        str | None, Query(max_length=200, pattern=PRINTABLE, description="only this queue")
    ] = None,
    after: Annotated[
        str | None,
        Query(
            pattern=_ISO,
            max_length=40,
            description="only samples taken after this ISO 8601 time (a sample's `at`)",
        ),
    ] = None,
) -> HistoryPage:
    """Depths and throughput per queue over the last hour, sampled by this server.

    Kept in memory since the server started: empty at first, an hour at most.
    A dashboard asks for everything once, then only for what came `after`.
    """
    history: QueueHistory = request.app.state.history
    return history.page(queue, None if after is None else _instant(after))


def _instant(text: str) -> datetime:
    """An ISO 8601 time (UTC if it names no offset); ConfigurationError (422) if invalid."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"after: not a valid time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
