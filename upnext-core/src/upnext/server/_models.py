"""What the REST API answers: response and request bodies, in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from upnext.jobs import JobInfo, JobPage, JobSummary
from upnext.workers import QueueCounts

__all__ = [
    "BulkReplay",
    "BulkReplayResult",
    "ErrorBody",
    "Health",
    "JobInfo",
    "JobPage",
    "JobSummary",
    "Purged",
    "QueueInfo",
    "QueueList",
    "Replayed",
    "RunningJobInfo",
    "WorkerEntry",
    "WorkerList",
]

MAX_LIMIT = 500
# No control characters: backends differ on a NUL (refused, or a driver error).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class ErrorBody(BaseModel):
    """Every error answer: a stable code and a one-line message (never a traceback)."""

    error: str
    message: str
    detail: list[dict[str, Any]] | None = None


class Replayed(BaseModel):
    """A replayed entry and the id of the new job it became."""

    id: str
    job_id: str


class BulkReplay(BaseModel):
    """Replay every entry matching a filter (up to `limit`, newest first)."""

    # As the schema says: `true` or "10" for the limit is refused, not read as 1 or 10.
    model_config = ConfigDict(strict=True)

    queue: str | None = Field(default=None, max_length=200, pattern=PRINTABLE)
    function: str | None = Field(default=None, max_length=500, pattern=PRINTABLE)
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)


class BulkReplayResult(BaseModel):
    """What a bulk replay did: entries replayed, and entries skipped with why."""

    replayed: list[Replayed]
    skipped: dict[str, str]


class Purged(BaseModel):
    """How many entries a purge removed."""

    purged: int


class QueueInfo(BaseModel):
    """One queue's counts (null where the broker cannot tell) and whether it is paused.

    `paused` is null where no state store keeps pauses (RabbitMQ without ``results=``).
    """

    name: str
    ready: int | None
    scheduled: int | None
    in_flight: int | None
    dead: int | None
    paused: bool | None = None


class QueueList(BaseModel):
    """Every queue the server knows of, with its counts."""

    queues: list[QueueInfo]


class Health(BaseModel):
    """The server is up and reached its broker."""

    status: Literal["ok"]
    scheme: str
    dlq_access: Literal["indexed", "scan"] | None


class RunningJobInfo(BaseModel):
    """A job a live worker runs: its queue, attempt, start (null until its body starts), progress.

    `queue` is null for workers of a version that did not report it.
    """

    job_id: str
    function: str
    attempt: int
    started_at: datetime | None
    progress: float | None
    queue: str | None = None


class WorkerEntry(BaseModel):
    """A live worker as its last tick described it; `heartbeat_age` is seconds since that tick.

    `running_count` counts every job it runs; `running` lists them, cut short
    only when the list would not fit one registry entry. `finished` counts
    the jobs it finished per queue since it started (settled for good, and
    failed among them).
    """

    worker_id: str
    name: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    beat_at: datetime
    heartbeat_age: float
    running_count: int
    running: list[RunningJobInfo]
    finished: dict[str, QueueCounts] = {}


class WorkerList(BaseModel):
    """Every live worker; `registry` is "unavailable" (and the list empty) without a state store."""

    workers: list[WorkerEntry]
    registry: Literal["available", "unavailable"]
    reason: str | None = None
