"""The REST API under /api/v1: dead-letter queue, jobs, workers, queues, health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from upnext._dlq import DeadLetterEntry, EntryPage
from upnext.jobs import JobStatus
from upnext.server._backend import Backend
from upnext.server._models import (
    MAX_LIMIT,
    PRINTABLE,
    BulkReplay,
    BulkReplayResult,
    ErrorBody,
    Health,
    JobInfo,
    JobPage,
    Purged,
    QueueList,
    Replayed,
    WorkerList,
)
from upnext.server._queues import with_paused

__all__ = ["router"]


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(_backend)]
QueueFilter = Annotated[
    str | None, Query(max_length=200, pattern=PRINTABLE, description="only this queue")
]
FunctionFilter = Annotated[
    str | None,
    Query(
        max_length=500,
        pattern=PRINTABLE,
        description="only this function: its dotted name or a dotted suffix of it",
    ),
]
JobIdFilter = Annotated[
    str | None,
    Query(max_length=200, pattern=PRINTABLE, description="only the entries of this job (its id)"),
]
EntryId = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "missing or wrong bearer token",
        409: "the dead-letter queue is busy with another admin, or the entry can't be replayed",
        413: "request body too large",
        502: "the broker refused the operation",
        503: "the broker cannot be reached",
    }.items()
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such entry (never existed, replayed or deleted)"}
}

router = APIRouter(prefix="/api/v1", responses=_ERRORS)


@router.get("/health", tags=["server"])
async def health(backend: BackendDep) -> Health:
    """The server is up and connected to its broker."""
    return await backend.health()


@router.get("/dlq", tags=["dead-letter queue"])
async def list_entries(
    backend: BackendDep,
    queue: QueueFilter = None,
    function: FunctionFilter = None,
    job_id: JobIdFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=500, pattern=PRINTABLE)] = None,
) -> EntryPage:
    """Dead-letter entries newest first; pass `next_cursor` back as `cursor` for the next page."""
    return await backend.dlq_list(limit, cursor, queue, function, job_id)


@router.delete("/dlq", tags=["dead-letter queue"])
async def purge(backend: BackendDep, queue: QueueFilter = None) -> Purged:
    """Remove every entry (of `queue`, if given); how many were removed."""
    return Purged(purged=await backend.dlq_purge(queue))


@router.post("/dlq/replay", tags=["dead-letter queue"])
async def replay_matching(backend: BackendDep, body: BulkReplay) -> BulkReplayResult:
    """Replay up to `limit` entries matching `queue`/`function`, each as a new job."""
    return await backend.replay_matching(body.queue, body.function, body.limit)


@router.get("/dlq/{entry_id}", tags=["dead-letter queue"], responses=_NOT_FOUND)
async def get_entry(backend: BackendDep, entry_id: EntryId) -> DeadLetterEntry:
    """One entry: payload, error with traceback, every attempt."""
    return await backend.dlq_get(entry_id)


@router.post("/dlq/{entry_id}/replay", tags=["dead-letter queue"], responses=_NOT_FOUND)
async def replay(backend: BackendDep, entry_id: EntryId) -> Replayed:
    """Enqueue the entry's job again as a new job (new id) and remove the entry."""
    return Replayed(id=entry_id, job_id=await backend.dlq_replay(entry_id))


@router.delete("/dlq/{entry_id}", tags=["dead-letter queue"], status_code=204, responses=_NOT_FOUND)
async def delete_entry(backend: BackendDep, entry_id: EntryId) -> Response:
    """Remove one entry."""
    await backend.dlq_delete(entry_id)
    return Response(status_code=204)


@router.get("/jobs", tags=["jobs"])
async def jobs(
    backend: BackendDep,
    queue: QueueFilter = None,
    task: Annotated[
        str | None,
        Query(
            max_length=500,
            pattern=PRINTABLE,
            description="a case-sensitive substring of the dotted function name",
        ),
    ] = None,
    status: Annotated[
        JobStatus | None,
        Query(description="absent: active jobs, then recently finished ones"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, pattern=PRINTABLE)] = None,
) -> JobPage:
    """Jobs of `status`, newest first (waiting ones in the order they would run).

    Sources: queued and scheduled from the broker (422 where it cannot show
    waiting jobs), active from the worker registry, complete, failed and
    cancelled from the recent-jobs history (`exact` false: the last ~500 jobs
    per worker, at most an hour), dead from the dead-letter queue. Pass
    `next_cursor` back as `cursor` for the next page.
    """
    return await backend.jobs(status, queue, task, limit, cursor)


@router.get("/jobs/{job_id}", tags=["jobs"])
async def job(backend: BackendDep, job_id: EntryId, queue: QueueFilter = None) -> JobInfo:
    """A job's final status and result, else its run on a live worker or its place in a queue.

    Lineage (parent, root, replay, children), worker, attempt and dead-letter
    entry come from the result record, the worker registry and the recent-jobs
    history. "unknown" when no source knows the id.
    """
    return await backend.job(job_id, queue)


@router.get("/workers", tags=["workers"])
async def workers(backend: BackendDep) -> WorkerList:
    """Every live worker: queues, concurrency, heartbeat age and running jobs."""
    return await backend.workers()


@router.get("/queues", tags=["queues"])
async def queues(backend: BackendDep) -> QueueList:
    """Ready, scheduled, in-flight and dead counts per queue (null where unknown), and paused."""
    return QueueList(queues=await with_paused(backend, await backend.queue_stats()))
