"""The models of `upnext.jobs`: a listed job, a page of them, one job's details."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel

from upnext._result import ErrorInfo
from upnext.errors import ConfigurationError

__all__ = [
    "MAX_JOBS_LIMIT",
    "STATUSES",
    "JobInfo",
    "JobPage",
    "JobStatus",
    "JobSummary",
    "check_listing",
]

JobStatus = Literal["queued", "scheduled", "active", "complete", "failed", "cancelled", "dead"]
"""A status a listing selects."""
STATUSES: tuple[str, ...] = get_args(JobStatus)
MAX_JOBS_LIMIT = 500


class JobSummary(BaseModel):
    """One job in a listing; fields a source cannot tell are null.

    Datetimes are UTC. `attempt` is the attempt running or last run (for a
    waiting job: the one it will run). `error` is one line, ``Type: message``.
    """

    job_id: str
    status: JobStatus
    queue: str | None
    function: str
    attempt: int | None
    worker_id: str | None
    enqueued_at: datetime | None
    due_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: str | None
    parent_id: str | None
    dlq_entry_id: str | None


class JobPage(BaseModel):
    """A page of jobs and the cursor of the next (None after the last).

    `source` names where they came from (``mixed``: registry then history);
    `exact` is False where the source is a recent window (the history), not
    every job of that status.
    """

    items: list[JobSummary]
    next_cursor: str | None
    source: Literal["broker", "registry", "history", "dlq", "mixed"]
    exact: bool


class JobInfo(BaseModel):
    """What is known of one job: its final result, its run, its place in a queue, or "unknown".

    Status "active": no final result yet and a live worker runs it; then
    `worker_id` and `attempt` say who runs which attempt, and `started_at` when
    that attempt's body started (null while it waits to start). "queued" and
    "scheduled": it waits in a queue of a broker that can show waiting jobs.
    `children` are the ids of jobs it submitted that the recent history holds.
    """

    job_id: str
    status: Literal["complete", "failed", "cancelled", "active", "queued", "scheduled", "unknown"]
    queue: str | None = None
    function: str | None = None
    result: Any = None
    error: ErrorInfo | None = None
    attempts: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    worker_id: str | None = None
    attempt: int | None = None
    parent_id: str | None = None
    root_id: str | None = None
    replay_of: str | None = None
    dlq_entry_id: str | None = None
    children: list[str] | None = None


def check_listing(status: str | None, limit: int) -> None:
    """ConfigurationError for a status or limit a listing does not take."""
    if status is not None and status not in STATUSES:
        raise ConfigurationError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if not 1 <= limit <= MAX_JOBS_LIMIT:
        raise ConfigurationError(f"limit must be between 1 and {MAX_JOBS_LIMIT}, got {limit}")
