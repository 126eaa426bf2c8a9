"""`JobRun`: one delivery held by a consumer, and what is known about its run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from upnext.workers import RunningJob

if TYPE_CHECKING:
    from upnext.broker.protocol import Delivery
    from upnext.broker.state import SlotClaim
    from upnext.middleware._types import CancelReason, Job, Outcome

__all__ = ["JobRun", "running_jobs"]


@dataclass(slots=True, eq=False)
class JobRun:
    """One delivery being worked on, and why it might be stopped early."""

    delivery: Delivery
    lease_until: float
    task: asyncio.Task[None] | None = None
    job: Job | None = None
    cancel_reason: CancelReason | None = None
    lease_lost: bool = False
    parked: bool = False  # a suspect waiting until it can run alone
    done: bool = False
    slot_freed: bool = False
    started: float | None = None  # Unix time the attempt's body started
    finished: float | None = None  # ... and ended
    logged: bool = False  # INFO is on for `upnext.job` (asked once per job, at its start)
    outcome: Outcome | None = None  # how the attempt's body ended, once it has
    # a concurrency slot `FlowLimits` took (or is taking) for it; given back by the end
    limit_slot: SlotClaim | None = None

    def cancel(self, reason: CancelReason) -> bool:
        """Stop this run for `reason` (the first reason wins, but a lost lease always does).

        True if the reason was taken.
        """
        if self.done or (self.cancel_reason is not None and reason != "lease_lost"):
            return False
        self.cancel_reason = reason
        if self.task is not None and not self.task.done():
            self.task.cancel()
        return True


def running_jobs(runs: Iterable[JobRun]) -> list[RunningJob]:
    """The decoded, unsettled jobs among `runs` (what the worker tick reports)."""
    return [
        RunningJob(
            job_id=run.job.id,
            function=run.job.function,
            attempt=run.job.attempt,
            started_at=run.started,
            queue=run.delivery.envelope.queue,
        )
        for run in list(runs)
        if run.job is not None and not run.done
    ]
