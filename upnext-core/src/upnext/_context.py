"""The running job's context, carried by a ContextVar."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from upnext.errors import NoJobContext

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = ["Context", "get_current_context"]


class Context(NamedTuple):
    """What a running job knows about itself.

    `attempt` is 1-based and never exceeds `max_attempts`. `root_id` is the
    id of the job that started the workflow (a root job's own id).
    `scheduled_for` is the tick a cron job runs for, an aware datetime in the
    cron's timezone (UTC for ``every=``); None for a job no cron fired.
    """

    job_id: str
    attempt: int
    max_attempts: int
    function: str
    queue: str
    parent_id: str | None
    root_id: str
    replay_of: str | None = None
    scheduled_for: datetime | None = None


@dataclass(slots=True)
class JobScope:
    """The context plus the worker running it (for lent slots and sync twins)."""

    context: Context
    worker: Worker
    lent: int = 0


current_scope: ContextVar[JobScope | None] = ContextVar("upnext_job", default=None)


def get_current_context() -> Context:
    """The context of the job running in this task or thread.

    Raises `NoJobContext` (a RuntimeError) outside a job.
    """
    scope = current_scope.get()
    if scope is None:
        raise NoJobContext("get_current_context() called outside a running upnext job")
    return scope.context
