"""Jobs you can see: list them by status, look one up by id, on every broker.

Each status has one source, and says whether it is exact:

==============  =====================================================  =======
status          source                                                 exact
==============  =====================================================  =======
``queued``      the broker's waiting jobs (`JobBrowser`), due now      yes
``scheduled``   the broker's waiting jobs, due later                   yes
``active``      the worker registry (each worker's last tick)          yes
``complete``,   the recent-jobs history each worker's tick writes      no
``failed``,     (`upnext._history`: the last ~500 jobs per worker,
``cancelled``   for at most an hour)
``dead``        the dead-letter queue                                  yes
==============  =====================================================  =======

Without a status: active jobs, then the recent history, newest first
(``source="mixed"``). A broker that cannot read its queues without consuming
them (RabbitMQ) has no `JobBrowser`: asking it for queued or scheduled jobs is
a one-line `ConfigurationError`. `task` matches a case-sensitive substring of
the dotted function name. Cursors are opaque (``j1.`` and URL-safe base64);
one this module did not make, or made for another status, is a
`ConfigurationError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel

from upnext._result import ErrorInfo
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = [
    "MAX_JOBS_LIMIT",
    "STATUSES",
    "JobInfo",
    "JobPage",
    "JobStatus",
    "JobSummary",
    "find_job",
    "list_jobs",
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


async def list_jobs(
    worker: Worker,
    *,
    status: str | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    queues: Sequence[str] = (),
) -> JobPage:
    """A page of `worker`'s broker's jobs of `status` (see the module docstring).

    `queues` are the queues to browse for queued or scheduled jobs when no
    `queue` is given (the broker's own list, `QueueAdmin.queues`, is added).
    """
    from upnext._joblist import Listing

    check_listing(status, limit)
    listing = Listing(worker, queue=queue, task=task or None, limit=limit)
    return await listing.page(status, cursor, queues)


async def find_job(
    worker: Worker, job_id: str, *, queue: str | None = None, queues: Sequence[str] = ()
) -> JobInfo:
    """Everything known of `job_id`: result store, registry, history, queues; else "unknown"."""
    from upnext._jobfind import find

    return await find(worker, job_id, queue, queues)
