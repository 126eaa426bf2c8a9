"""`@worker.cron`: a worker's periodic tasks and the scheduler that fires them.

A cron is a task of no arguments plus a `CronSchedule` (`upnext._cronstate`).
`CronScheduler` fires its ticks; the `CronRuns` middleware records its runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar, overload

from upnext._cronruns import CronRuns
from upnext._cronscheduler import CronScheduler
from upnext._cronspec import CronSchedule, MissedRunPolicy
from upnext._cronstate import CronDef
from upnext._durations import check_duration
from upnext._task import DEFAULT_TIMEOUT, Task, define_task
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._client import Client
    from upnext._worker import Worker

__all__ = ["CronDecorator", "CronOptions", "Crons"]

R = TypeVar("R")


class CronOptions(TypedDict, total=False):
    """The options of ``@worker.cron`` besides the expression (see `Worker.cron`)."""

    every: float
    name: str
    timeout: float
    missed_run_policy: MissedRunPolicy
    max_catch_up_seconds: float | None
    timezone: str | None
    allow_overlap: bool


class CronDecorator(Protocol):
    """What ``@worker.cron(...)`` returns: a decorator of a function of no arguments."""

    @overload
    def __call__(self, fn: Callable[[], Awaitable[R]], /) -> Task[[], R]: ...
    @overload
    def __call__(self, fn: Callable[[], R], /) -> Task[[], R]: ...


class Crons:
    """A worker's crons, and the scheduler that fires them while it runs."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.defs: dict[str, CronDef] = {}
        self.scheduler: CronScheduler | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.defs

    def decorator(self, expression: str | None, options: CronOptions) -> CronDecorator:
        """The decorator ``@worker.cron(expression, **options)`` applies."""
        owner = f"cron {options.get('name') or expression or ''}".strip()
        schedule = CronSchedule(expression, options.get("every"), options.get("timezone"), owner)
        policy = options.get("missed_run_policy", MissedRunPolicy.LATEST_ONLY)
        if not isinstance(policy, MissedRunPolicy):
            raise ConfigurationError(f"{owner}: missed_run_policy must be a MissedRunPolicy")
        catch_up = options.get("max_catch_up_seconds")
        if catch_up is not None:
            catch_up = check_duration("max_catch_up_seconds", catch_up, positive=True)
        self.worker.factories.require_state("cron")

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            if any(
                p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                for p in inspect.signature(fn).parameters.values()
            ):
                raise ConfigurationError(f"{owner}: a cron function takes no arguments")
            task = define_task(
                self.worker,
                fn,
                name=options.get("name"),
                timeout=options.get("timeout", DEFAULT_TIMEOUT),
            )
            if task.name in self.worker.tasks:
                raise ConfigurationError(
                    f"worker {self.worker.name!r} already has a task named {task.name!r}"
                )
            self.worker.tasks[task.name] = task
            self.defs[task.name] = CronDef(
                task, schedule, policy, catch_up, options.get("allow_overlap", False)
            )
            if len(self.defs) == 1:
                self.worker.middleware = (*self.worker.middleware, CronRuns(self.worker))
            return task

        return register

    def start(self, client: Client) -> None:
        """Start firing ticks (if there are crons) on the running event loop."""
        if self.defs:
            self.scheduler = CronScheduler(self.worker, client, list(self.defs.values()))
            self.scheduler.start()

    async def stop(self) -> None:
        """Stop firing ticks."""
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await scheduler.stop()
