"""The worker registry's read side: which workers are alive and what they run.

Every worker with a shared state store (`Worker(results=...)` for brokers that
keep none) writes its entry once a tick; an entry disappears at a clean stop,
or a few ticks after its worker died.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from upnext._statekeys import WORKER_PREFIX
from upnext._statekeys import read_prefix as _read_prefix

if TYPE_CHECKING:
    from upnext._worker import Worker
    from upnext.broker.state import StateStore

__all__ = ["QueueCounts", "RunningJob", "WorkerInfo", "live_workers", "read_registry"]


class RunningJob(BaseModel):
    """A job a worker holds: its id, task, queue, attempt, start (epoch seconds) and progress.

    `attempt` is the attempt it runs (or is about to run); `started_at` is
    None until that attempt's body starts (while a `before_run` holds it, or
    it waits for its turn to run alone). `queue` is None in entries of
    workers older than the field.
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    function: str
    attempt: int
    started_at: float | None
    progress: float | None = None
    queue: str | None = None  # None in entries of workers from before it was written


class QueueCounts(BaseModel):
    """Jobs a worker finished on one queue since it started; the counts only grow.

    `processed` counts jobs settled for good (complete, failed or
    cancelled); `failed` those of them that failed (dead-lettered). A retry
    is not a finish: the job is counted when its last attempt settles.
    """

    model_config = ConfigDict(frozen=True)

    processed: int = 0
    failed: int = 0


class WorkerInfo(BaseModel):
    """A live worker as its last tick described it.

    `started_at` and `beat_at` are epoch seconds by the worker's clock.
    `running_count` counts every job it runs; `running` lists them, cut short
    only when the list would not fit one state value (64 KiB). `finished`
    holds its counts per queue (empty for workers older than the field): a
    reader sums their growth across workers to get throughput.
    """

    model_config = ConfigDict(frozen=True)

    worker_id: str
    name: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: float
    beat_at: float
    running_count: int
    running: list[RunningJob]
    finished: dict[str, QueueCounts] = Field(default_factory=dict)


async def read_registry(state: StateStore) -> list[WorkerInfo]:
    """Every live worker in `state`'s registry, ordered by worker id."""
    return await _read_prefix(state, WORKER_PREFIX, WorkerInfo)


async def live_workers(worker: Worker) -> list[WorkerInfo]:
    """The workers alive on `worker`'s broker (ConfigurationError if it keeps no state)."""
    client = await worker.client()
    return await read_registry(client.require_state("the worker registry"))
