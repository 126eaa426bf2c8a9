"""`Middleware`: the base class of every pipeline stage implementation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from upnext._settlement import Settlement
    from upnext._task import Task
    from upnext.middleware._types import Decision, Job, Outcome, Submission

__all__ = ["STAGES", "CallNext", "Middleware", "overrides"]

CallNext = Callable[[], Awaitable[Any]]
"""What `around_run` is given: await it (once) to run the rest of the chain and the body."""

STAGES = ("before_enqueue", "before_run", "around_run", "after_run", "after_settle")


class Middleware:
    """A step of the job pipeline; every stage is a no-op until a subclass overrides it.

    Only the stages a subclass overrides are called (decided once, when the
    worker starts), so an unused stage costs nothing. Stages, in a job's order:

    - `before_enqueue` (producer): change a submission's delay or priority,
      dedupe it, or refuse it by raising (an `upnext.errors` error reaches
      the caller; nothing of the batch is enqueued).
    - `before_run`: after the body is decoded, before anything runs; return a
      `Decision` (`Skip`, `Delay`, `Release`, `DeadLetterJob`) or None.
    - `around_run`: wraps the call of the body, ``return await call_next()``;
      the first middleware is the outermost.
    - `after_run`: the outcome is known, before the settlement is decided.
    - `after_settle`: the settlement is durable; runs in the background,
      bounded by the worker's `hook_timeout`, at most once.
    """

    settles_with_events_only: ClassVar[bool] = False
    """True: `after_settle` is only called for settlements that carry hook events."""

    lost_runs_only: ClassVar[bool] = False
    """True: `before_run` is only called for jobs that lost a run before (redelivered ones)."""

    bounds_its_calls: ClassVar[bool] = False
    """True: `after_settle` bounds each of its own calls (not bounded as a whole)."""

    headers_only: ClassVar[bool] = False
    """True: it takes part in no worker stage of a job whose body carries no headers (it
    acts on a header it wrote at submit): a job submitted without any costs it nothing."""

    settles_inline: ClassVar[bool] = False
    """True: `after_settle` never waits (it counts or records): it is awaited in the job's
    own task right after the settle, before any background `after_settle`, with no
    background task and no timeout of its own."""

    def applies_to(self, task: Task[Any, Any] | None) -> bool:
        """Whether this middleware takes part in jobs of `task` (None: an unknown task).

        Asked once per task; False keeps it out of every worker stage of that
        task's jobs. `before_enqueue` is not filtered by it.
        """
        return True

    async def before_enqueue(self, submission: Submission) -> None:
        """Runs in the producer, per job, before any I/O."""

    async def before_run(self, job: Job) -> Decision | None:
        """Runs before the body; a returned `Decision` settles the job without running it.

        An exception raised here counts as the attempt failing with it
        (retried per the task's policy, then dead-lettered).
        """
        return None

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Wraps the body's call; returns (or replaces) its value."""
        return await call_next()

    async def after_run(self, job: Job, outcome: Outcome) -> None:
        """Sees the outcome before the settlement is decided (an exception is logged)."""

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        """Sees what was durably written (an exception is logged and ignored)."""


def overrides(middleware: Middleware, stage: str) -> bool:
    """Whether `middleware`'s class defines `stage` itself (not the no-op base)."""
    return getattr(type(middleware), stage) is not getattr(Middleware, stage)
