"""The job pipeline: which middleware take part in each stage, and how stages are run.

Stage lists are computed once per task (a middleware that does not override
a stage, or whose `applies_to` refuses the task, is left out), so a stage
nobody implements costs one truthiness check. Order: `before_enqueue`,
`before_run` and `around_run` in the pipeline's order (the first middleware
is the outermost `around_run`); `after_run` and `after_settle` in reverse, so
the first middleware is also the last to see a job leave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from upnext._durations import check_duration
from upnext._task import check_priority
from upnext.errors import ConfigurationError
from upnext.middleware._base import CallNext, Middleware, overrides
from upnext.middleware._builtins import JobContext, Timeout
from upnext.middleware._types import Job, Outcome, Submission

if TYPE_CHECKING:
    from upnext._hooks import Plugins
    from upnext._serializer import JobBody
    from upnext._settlement import Settlement
    from upnext._task import Task
    from upnext._worker import Worker

__all__ = ["Pipeline", "Stages", "before_enqueue", "collect_middleware"]

log = logging.getLogger("upnext.worker")


class Stages(NamedTuple):
    """The middleware taking part in each worker stage for one task."""

    before_run: tuple[Middleware, ...]
    before_run_first: tuple[Middleware, ...]  # for jobs that never lost a run
    around_run: tuple[Middleware, ...]
    # The built-ins that lead around_run, which the executor runs inline (no
    # coroutine or partial per job): the job's context, then its timeout.
    context: JobContext | None
    timeout: Timeout | None
    # the around_run bound methods after those, innermost first (the chain is built
    # from the inside)
    around_run_inside_out: tuple[Callable[[Job, CallNext], Awaitable[Any]], ...]
    after_run: tuple[Middleware, ...]  # reversed
    after_settle: tuple[Middleware, ...]  # reversed; run in a background task
    after_settle_inline: tuple[Middleware, ...]  # reversed; `settles_inline` ones
    # Whether an after_settle here wants settlements that announce no event.
    every_settle: bool


class Pipeline:
    """A worker's middleware in order, with the stage lists of each task it has met."""

    def __init__(self, middleware: Sequence[Middleware], hook_timeout: float) -> None:
        self.middleware = tuple(middleware)
        self.hook_timeout = hook_timeout
        self.by_task: dict[Task[Any, Any] | None, Stages] = {}
        # The same for jobs without headers: no `headers_only` middleware in them.
        self.bare_by_task: dict[Task[Any, Any] | None, Stages] = {}

    def hears_every_settle(self, job: Job) -> bool:
        """Whether an after_settle of `job`'s wants its settlements that announce no event."""
        bare = job.body is None or not job.body.headers
        stages = (self.bare_by_task if bare else self.by_task).get(job.task)
        if stages is None:
            stages = self.stages(job.task, bare=bare)
        return stages.every_settle

    def stages(self, task: Task[Any, Any] | None, *, bare: bool = False) -> Stages:
        """The stage lists for jobs of `task` (computed on first use).

        `bare`: for a job whose body has no headers, without the `headers_only`
        middleware (the hot path reads `by_task` or `bare_by_task` itself).
        """
        cache = self.bare_by_task if bare else self.by_task
        stages = cache.get(task)
        if stages is None:
            taking_part = [
                m for m in self.middleware if m.applies_to(task) and not (bare and m.headers_only)
            ]

            def of(stage: str) -> tuple[Middleware, ...]:
                return tuple(m for m in taking_part if overrides(m, stage))

            before_run = of("before_run")
            around_run = of("around_run")
            context, timeout, chained = _inline_builtins(around_run)
            stages = cache[task] = Stages(
                before_run,
                tuple(m for m in before_run if not m.lost_runs_only),
                around_run,
                context,
                timeout,
                tuple(m.around_run for m in reversed(chained)),
                of("after_run")[::-1],
                tuple(m for m in of("after_settle")[::-1] if not m.settles_inline),
                tuple(m for m in of("after_settle")[::-1] if m.settles_inline),
                any(not m.settles_with_events_only for m in of("after_settle")),
            )
        return stages

    @staticmethod
    async def after_run(job: Job, outcome: Outcome, stages: Stages) -> None:
        """Each after_run (reverse order); one that raises is logged and the rest still run."""
        for middleware in stages.after_run:
            try:
                await middleware.after_run(job, outcome)
            except Exception:
                log.exception(
                    "middleware %r after_run for job %s raised; ignored", middleware, job.id
                )

    def wants_after_settle(self, stages: Stages, settlement: Settlement) -> bool:
        """Whether anything would hear of this settlement (no background task otherwise)."""
        return any(not m.settles_with_events_only or settlement.events for m in stages.after_settle)

    async def after_settle(
        self, job: Job, settlement: Settlement, stages: Stages, *, inline: bool = False
    ) -> None:
        """Each after_settle (reverse order), bounded by hook_timeout, logged and swallowed.

        `inline`: the `settles_inline` ones instead, run in the job's own task
        (they never await, so no timeout bounds them).
        """
        for middleware in stages.after_settle_inline if inline else stages.after_settle:
            if middleware.settles_with_events_only and not settlement.events:
                continue
            try:
                if inline or middleware.bounds_its_calls:
                    await middleware.after_settle(job, settlement)
                else:
                    async with asyncio.timeout(self.hook_timeout):
                        await middleware.after_settle(job, settlement)
            except TimeoutError:
                log.warning(
                    "middleware %r after_settle for job %s timed out after %.1fs",
                    middleware,
                    job.id,
                    self.hook_timeout,
                )
            except Exception:
                log.exception(
                    "middleware %r after_settle for job %s raised; ignored", middleware, job.id
                )


def _inline_builtins(
    around_run: tuple[Middleware, ...],
) -> tuple[JobContext | None, Timeout | None, tuple[Middleware, ...]]:
    """The leading `JobContext` and `Timeout` (each only where it leads), and the rest.

    Running them inline keeps their order: the context is set first, the
    timeout armed next, and whatever follows them runs inside both.
    """
    rest = around_run
    context = rest[0] if rest and type(rest[0]) is JobContext else None
    if context is not None:
        rest = rest[1:]
    timeout = rest[0] if rest and type(rest[0]) is Timeout else None
    if timeout is not None:
        rest = rest[1:]
    return context, timeout, rest


def collect_middleware(
    plugins: Plugins, worker: Worker, own: Iterable[object]
) -> tuple[Middleware, ...]:
    """The plugins' middleware (in pluggy's call order), then the worker's own.

    Each must be a `Middleware` instance: anything else is refused here, when
    the worker is built.
    """
    found: list[object] = []
    for provided in plugins.manager.hook.upnext_middleware(worker=worker):
        found.extend(provided)
    found.extend(own)
    checked: list[Middleware] = []
    for middleware in found:
        if not isinstance(middleware, Middleware):
            raise ConfigurationError(
                f"middleware must be upnext.middleware.Middleware instances, got {middleware!r}"
            )
        checked.append(middleware)
    return tuple(checked)


def _checked_headers(headers: dict[str, str], job_id: str) -> dict[str, str]:
    """`headers` themselves if every key and value is a str, else a one-line error."""
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigurationError(
                f"job {job_id}: headers must map str to str, got {key!r}: {value!r}"
            )
    return headers


async def before_enqueue(
    stage: Sequence[Middleware],
    task: Task[Any, Any],
    bodies: Sequence[JobBody],
    delay: float,
    priority: int,
) -> list[Submission]:
    """Each job's submission after every before_enqueue (in order) has seen it.

    What a middleware set is checked as the caller's options are: a bad delay
    or priority is a one-line `ConfigurationError` before any I/O.
    """
    submissions = []
    for body in bodies:
        submission = Submission(task, body.id, body.queue, body.args, body.kwargs, delay, priority)
        for middleware in stage:
            await middleware.before_enqueue(submission)
        submission.delay = check_duration("delay", submission.delay, owner=f"job {body.id}")
        if body.expires_at is not None:  # the deadline runs from when the job is due
            body.expires_at += submission.delay - delay
        check_priority(submission.priority)
        if submission.headers:
            body.headers = _checked_headers(submission.headers, body.id)
        submissions.append(submission)
    return submissions
