"""A cron's definition and what it keeps in the state store.

The cursor ``upnext:cron:<name>`` is a `CronCursor`: the last tick handled,
the ticks claimed but not confirmed enqueued, enabled or not. The latest run
``upnext:cronrun:<name>`` is a `CronRun`. Keys are in `upnext._statekeys`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from upnext._cronspec import CronSchedule, MissedRunPolicy

if TYPE_CHECKING:
    from upnext._task import Task

__all__ = ["CronCursor", "CronDef", "CronRun", "RunStatus", "tick_job_id"]

RunStatus = Literal["queued", "running", "succeeded", "failed", "retrying", "cancelled"]


class CronCursor(BaseModel):
    """A cron's stored cursor (``upnext:cron:<name>``)."""

    schedule: str  # the expression, or "every <n>s"
    every: float | None = None
    timezone: str | None = None
    enabled: bool = True
    last_tick: float | None = None  # the latest tick handled: fired, skipped or let go
    pending: list[float] = Field(default_factory=list)  # claimed, not confirmed enqueued
    pending_since: float | None = None
    claimed_by: str | None = None


class CronRun(BaseModel):
    """A cron's latest run (``upnext:cronrun:<name>``)."""

    job_id: str
    scheduled_for: float
    status: RunStatus
    started_at: float
    finished_at: float | None = None


def tick_job_id(name: str, tick: float) -> str:
    """The job id of `name`'s tick: the same on every worker, so a tick is one job."""
    return f"cron:{name}:{round(tick * 1000)}"


@dataclass(frozen=True, slots=True)
class CronDef:
    """A registered cron: its task and when and how it fires."""

    task: Task[Any, Any]
    schedule: CronSchedule
    missed_run_policy: MissedRunPolicy
    max_catch_up_seconds: float | None
    allow_overlap: bool

    @property
    def name(self) -> str:
        """The cron's name: its task's."""
        return self.task.name
