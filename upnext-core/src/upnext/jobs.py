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
from typing import TYPE_CHECKING

from upnext._jobfind import find
from upnext._joblist import Listing
from upnext._jobmodels import (
    MAX_JOBS_LIMIT,
    STATUSES,
    JobInfo,
    JobPage,
    JobStatus,
    JobSummary,
    check_listing,
)

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
    check_listing(status, limit)
    listing = Listing(worker, queue=queue, task=task or None, limit=limit)
    return await listing.page(status, cursor, queues)


async def find_job(
    worker: Worker, job_id: str, *, queue: str | None = None, queues: Sequence[str] = ()
) -> JobInfo:
    """Everything known of `job_id`: result store, registry, history, queues; else "unknown"."""
    return await find(worker, job_id, queue, queues)
