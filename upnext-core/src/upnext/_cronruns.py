"""`CronRuns`: the middleware that records a cron's latest run in the state store.

The scheduler marks a tick's run ``queued`` before enqueuing it; the run is
written as ``running`` when its body starts; both with a TTL of the task's
timeout plus `RUN_MARK_SLACK`, so the mark of a worker that died lapses. Its
outcome replaces it when the body ends, without a TTL. The scheduler reads it
to skip a tick while the previous run is in progress (unless ``allow_overlap``);
`upnext.crons.list_crons` shows it as the last run and its outcome.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

from upnext._cronspec import tick_of
from upnext._cronstate import CronRun, RunStatus
from upnext._statekeys import cron_run_key
from upnext.broker.state import StateWrite
from upnext.middleware._base import CallNext, Middleware

if TYPE_CHECKING:
    from upnext._task import Task
    from upnext._worker import Worker
    from upnext.middleware._types import Job, Outcome

__all__ = ["RUN_MARK_SLACK", "CronRuns"]

log = logging.getLogger("upnext.cron")

RUN_MARK_SLACK: Final = 60.0
"""Seconds a ``running`` mark outlives its task's timeout (then its worker is presumed dead)."""

_STATUS: Final[dict[str, RunStatus]] = {
    "success": "succeeded",
    "error": "failed",
    "timeout": "failed",
    "rejected": "failed",
    "retry": "retrying",
    "cancelled": "cancelled",
}


class CronRuns(Middleware):
    """Writes each cron job's run (``running``, then its outcome) to ``upnext:cronrun:<name>``."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def applies_to(self, task: Task[Any, Any] | None) -> bool:
        """Only the worker's cron tasks."""
        return task is not None and task.name in self.worker.crons

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Mark the run ``running`` (best effort), then run the rest."""
        tick = tick_of(job.body.headers if job.body is not None else None)
        if tick is not None:
            run = CronRun(
                job_id=job.id,
                scheduled_for=tick.timestamp(),
                status="running",
                started_at=time.time(),
            )
            assert job.task is not None
            await self._write(job.function, run, job.task.timeout + RUN_MARK_SLACK)
        return await call_next()

    async def after_run(self, job: Job, outcome: Outcome) -> None:
        """Replace the ``running`` mark with the outcome."""
        tick = tick_of(outcome.body.headers)
        if tick is None:
            return
        run = CronRun(
            job_id=job.id,
            scheduled_for=tick.timestamp(),
            status=_STATUS.get(outcome.kind, "failed"),
            started_at=outcome.started,
            finished_at=outcome.finished,
        )
        await self._write(job.function, run, None)

    async def _write(self, name: str, run: CronRun, ttl: float | None) -> None:
        try:
            state = (await self.worker.client()).require_state("cron")
            await state.state_put(
                [StateWrite(cron_run_key(name), run.model_dump_json().encode(), ttl)]
            )
        except Exception as exc:  # a lost mark costs an overlap check, never the job
            log.warning("cron %s: could not record its run %s: %s", name, run.job_id, exc)
