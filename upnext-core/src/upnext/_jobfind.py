"""`upnext.jobs.find_job`'s work: one job looked up in every source that may know it.

In order: the recent-jobs history (its queue, worker, attempt, dead-letter
entry and children), the result store (the final result, in the history's
queue first), the worker registry (a run in progress), the history alone (a
job whose result was not kept), then the broker's waiting jobs where it can
show them (at most `SCAN_BUDGET` per status). A failed job's dead-letter
entry comes from the history, else from the dead-letter queue by job id where
it has an index (`dlq_access="indexed"`; a scan-type DLQ, RabbitMQ's, is not
read through for one job); a job known only there is reported from its entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from upnext._history import FinishedJob, read_history
from upnext._joblist import Listing, active_jobs, ts
from upnext._jobmodels import JobInfo
from upnext._serializer import ResultRecord
from upnext.broker.cursor import dead_letter_page
from upnext.broker.optional import JobBrowser
from upnext.broker.protocol import DeadLetterAdmin, DeadLetterRecord, QueueAdmin
from upnext.errors import ConfigurationError
from upnext.workers import WorkerInfo, read_registry

if TYPE_CHECKING:
    from upnext._worker import Worker
    from upnext.broker.state import StateStore

__all__ = ["find"]


async def _known(state: StateStore | None, job_id: str) -> tuple[FinishedJob | None, list[str]]:
    """The newest history entry of `job_id`, and the ids of its children in the history."""
    if state is None:
        return None, []
    newest: FinishedJob | None = None
    children: dict[str, None] = {}
    for job in await read_history(state):
        if job.job_id == job_id and (newest is None or newest.finished_at < job.finished_at):
            newest = job
        elif job.parent_id == job_id:
            children[job.job_id] = None
    return newest, list(children)


async def _dead_entry(worker: Worker, job_id: str, queue: str | None) -> DeadLetterRecord | None:
    """The newest dead-letter entry of `job_id`, from an indexed DLQ only (else None)."""
    broker = (await worker.client()).broker
    if not isinstance(broker, DeadLetterAdmin) or broker.capabilities.dlq_access != "indexed":
        return None
    page = await dead_letter_page(broker, queue=queue, job_id=job_id, limit=1)
    return page.records[0] if page.records else None


async def _registry(state: StateStore | None) -> list[WorkerInfo]:
    return [] if state is None else await read_registry(state)


async def find(worker: Worker, job_id: str, queue: str | None, queues: Sequence[str]) -> JobInfo:
    """What every source knows of `job_id` (see the module docstring)."""
    client = await worker.client()
    state = client.state
    seen, children = await _known(state, job_id)
    extra = {
        "children": children or None,
        "worker_id": seen.worker_id if seen else None,
        "attempt": seen.attempt if seen else None,
        "replay_of": seen.replay_of if seen else None,
        "dlq_entry_id": seen.dlq_entry_id if seen else None,
    }
    if queue is not None:
        candidates = [queue]
    else:
        listed = await client.broker.queues() if isinstance(client.broker, QueueAdmin) else []
        first = [seen.queue] if seen else []
        candidates = list(dict.fromkeys([*first, *queues, *sorted(listed)]))
    for name in candidates:
        data = await client.store.get_result(job_id, queue=name, wait=0.0)
        if data is None:
            continue
        try:
            record = ResultRecord.model_validate_json(data)
        except ValidationError:
            continue
        if record.s == "failed" and extra["dlq_entry_id"] is None:
            # Any queue: a store keyed by job id alone (PostgreSQL's) answers for every
            # queue asked, so `name` may not be the job's; its entry says which is.
            entry = await _dead_entry(worker, job_id, None)
            if entry is not None:
                extra["dlq_entry_id"], name = entry.id, entry.queue
        return JobInfo(
            job_id=job_id,
            status=record.s,
            queue=name,
            function=record.fn,
            result=record.v,
            error=record.e,
            attempts=record.at,
            started_at=ts(record.st),
            completed_at=ts(record.ct),
            parent_id=record.p,
            root_id=record.r,
            **extra,
        )
    for _, run in active_jobs(await _registry(state)):
        if run.job_id == job_id and (queue is None or run.queue in (None, queue)):
            return JobInfo(
                job_id=job_id,
                status="active",
                queue=run.queue or queue,
                function=run.function,
                started_at=run.started_at,
                worker_id=run.worker_id,
                attempt=run.attempt,
                children=children or None,
            )
    if seen is not None:
        return _from_history(seen, children)
    entry = await _dead_entry(worker, job_id, queue)
    if entry is not None:  # its result expired or was never kept; its entry stays
        return JobInfo(
            job_id=job_id,
            status="failed",
            queue=entry.queue,
            function=entry.function,
            completed_at=ts(entry.failed_at),
            dlq_entry_id=entry.id,
            children=children or None,
        )
    return await _waiting(worker, job_id, queue, queues) or JobInfo(
        job_id=job_id, status="unknown", queue=queue
    )


def _from_history(seen: FinishedJob, children: list[str]) -> JobInfo:
    """A finished job whose result the store does not keep, as the history remembers it."""
    return JobInfo(
        job_id=seen.job_id,
        status=seen.status,
        queue=seen.queue,
        function=seen.function,
        attempts=seen.attempt,
        started_at=ts(seen.started_at),
        completed_at=ts(seen.finished_at),
        worker_id=seen.worker_id,
        attempt=seen.attempt,
        parent_id=seen.parent_id,
        root_id=seen.root_id,
        replay_of=seen.replay_of,
        dlq_entry_id=seen.dlq_entry_id,
        children=children or None,
    )


async def _waiting(
    worker: Worker, job_id: str, queue: str | None, queues: Sequence[str]
) -> JobInfo | None:
    """`job_id` waiting in a queue of a broker that can show them, else None."""
    client = await worker.client()
    if not isinstance(client.broker, JobBrowser):
        return None
    listing = Listing(worker, queue=queue, task=None, limit=500)
    for status in ("queued", "scheduled"):
        cursor: str | None = None
        for _ in range(4):  # SCAN_BUDGET jobs of each status at most
            try:
                page = await listing.page(status, cursor, queues)
            except ConfigurationError:
                return None
            for job in page.items:
                if job.job_id == job_id:
                    return JobInfo(
                        job_id=job_id,
                        status=job.status,
                        queue=job.queue,
                        function=job.function,
                        attempt=job.attempt,
                        parent_id=job.parent_id,
                    )
            if (cursor := page.next_cursor) is None:
                break
    return None
