"""The built-in middleware every worker runs first, in this order.

1. `LostRunIsolation` (before_run): a job on its last chance runs alone.
2. `JobContext` (around_run): `upnext.get_current_context()` inside the job.
3. `Hooks` (around_run, after_settle): per-task hooks and plugin events.
4. `Timeout` (around_run): cancels an attempt at the task's timeout.

Retry decisions, lost-run accounting, dead-lettering and result writing are
the pipeline's fixed head and tail (see docs/middleware.md), not middleware:
they decide what is written, which no stage may skip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from upnext._context import Context, JobScope, current_scope
from upnext._cronspec import tick_of
from upnext._hooks import call_hook
from upnext.hooks import HookEvent, PluginSpec
from upnext.middleware._base import CallNext, Middleware
from upnext.middleware._types import Decision, Job, Release

if TYPE_CHECKING:
    from upnext._consumer import Consumer
    from upnext._jobrun import JobRun
    from upnext._settlement import Settlement
    from upnext._task import Task
    from upnext._worker import Worker

__all__ = ["ABANDON_AFTER", "Hooks", "JobContext", "LostRunIsolation", "Timeout"]

log = logging.getLogger("upnext.worker")

ABANDON_AFTER = 5.0  # seconds an async task may ignore its cancellation before it is abandoned

_JOB_EVENTS = frozenset(name for name in dir(PluginSpec) if name.startswith("upnext_job_"))


class LostRunIsolation(Middleware):
    """A job one lost run away from the dead-letter queue waits to run alone.

    It starts only once its worker holds no other started job; then every
    other delivery held there is given back, uncounted, and nothing new is
    received until its body ends. If it takes the worker down again, it alone
    is charged the lost run (docs/semantics.md, "Lost runs"). When the worker
    stops meanwhile, the job is released.
    """

    lost_runs_only = True

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def applies_to(self, task: Task[Any, Any] | None) -> bool:
        """Tasks that count lost runs at all."""
        return task is not None and task.max_lost_runs > 0

    async def before_run(self, job: Job) -> Decision | None:
        """Wait for this suspect's turn; `Release()` if the worker stops first."""
        assert job.task is not None
        assert job.body is not None
        if job.body.lost < job.task.max_lost_runs:
            return None
        return None if await self._isolate(job._run) else Release()

    async def _isolate(self, run: JobRun) -> bool:
        consumer = self.consumer
        run.parked = True
        consumer.parked += 1
        try:
            while not (consumer.isolated is None and self._alone(run)) and not consumer.closing():
                consumer.turn.clear()
                await consumer.turn.wait()
        finally:
            run.parked = False
            consumer.parked -= 1
        if consumer.closing():
            return False
        consumer.isolated = run
        log.info(
            "job %s runs alone: one more lost run would dead-letter it", run.delivery.envelope.id
        )
        await consumer.pause_receiving()
        waiting = [r.task for r in consumer.runs.values() if r.parked and r.task is not None]
        for other in list(consumer.runs.values()):
            if other.parked:
                other.cancel("shutdown")
        await consumer.release_buffered()
        if consumer.prefetcher is not None:
            try:
                await consumer.prefetcher.give_back_prefetched()
            except Exception as exc:
                log.warning("giving back prefetched jobs failed: %s", exc)
        if waiting:
            await asyncio.wait(waiting)
        return True

    def _alone(self, run: JobRun) -> bool:
        """No delivery held here has started but `run` (and suspects still waiting)."""
        return all(r is run or r.task is None or r.parked for r in self.consumer.runs.values())


class JobContext(Middleware):
    """Sets the job's `upnext.Context` for its body and everything it calls."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Set the context, then run the rest."""
        self.enter(job)
        return await call_next()

    def enter(self, job: Job) -> None:
        """Set `job`'s context in the current task (the executor calls it inline, see `Stages`)."""
        body = job.body
        assert body is not None  # only decoded jobs run
        context = Context(
            job.id,
            job.attempt,
            job.max_attempts,
            job.function,
            job.queue,
            body.parent_id,
            body.root_id or body.id,
            body.replay_of,
            tick_of(body.headers) if body.headers else None,
        )
        current_scope.set(JobScope(context, self.worker))


class Hooks(Middleware):
    """Per-task hooks and plugin events: `on_start` before the body, the rest once settled.

    Every call is bounded by the worker's `hook_timeout`; what a hook raises
    is logged and ignored. Events after the start run in the background once
    the settlement is durable: at most once, never delaying the job.
    """

    settles_with_events_only = True
    bounds_its_calls = True

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.plugins_active = worker.plugins.active

    def applies_to(self, task: Task[Any, Any] | None) -> bool:
        """Tasks with a hook, or every task while a plugin listens to job events."""
        if self.plugins_active & _JOB_EVENTS:
            return True
        hooks = task.hooks if task is not None else None
        return hooks is not None and any(
            (hooks.on_start, hooks.on_success, hooks.on_failure, hooks.on_retry, hooks.on_complete)
        )

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Run `on_start` hooks, then the rest."""
        task = job.task
        assert task is not None  # only known tasks run
        if task.hooks.on_start is not None or "upnext_job_started" in self.plugins_active:
            event = HookEvent(
                job.id, job.function, job.queue, job.attempt, job.max_attempts, "active"
            )
            timeout = self.worker.hook_timeout
            if task.hooks.on_start is not None:
                await call_hook(task.hooks.on_start, event, timeout, f"{task.name}.on_start")
            if "upnext_job_started" in self.plugins_active:
                await self.worker.plugins.emit("upnext_job_started", event, timeout)
        return await call_next()

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        """Announce the settlement's events to the task's hooks, then to plugins."""
        task = job.task
        timeout = self.worker.hook_timeout
        for hook_name, plugin_name, event in settlement.events:
            hook = getattr(task.hooks, hook_name) if task is not None and hook_name else None
            if hook is not None:
                await call_hook(hook, event, timeout, f"{job.function}.{hook_name}")
            if plugin_name in self.plugins_active:
                await self.worker.plugins.emit(plugin_name, event, timeout)


class Timeout(Middleware):
    """Cancels an attempt at its task's timeout (reason ``timeout``).

    An async body that ignores its cancellation for `ABANDON_AFTER` seconds
    is abandoned: `abandon` settles it as timed out without it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, abandon: Callable[[JobRun], None]) -> None:
        self.loop = loop
        self.abandon = abandon

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Arm the deadline, run the rest, disarm it."""
        timer = self.arm(job)
        try:
            return await call_next()
        finally:
            timer.cancel()

    def arm(self, job: Job) -> asyncio.TimerHandle:
        """The timer that cancels `job` at its task's timeout (the caller cancels it after)."""
        task = job.task
        assert task is not None  # only known tasks run
        return self.loop.call_later(task.timeout, self._deadline, job._run, task.is_async)

    def _deadline(self, run: JobRun, is_async: bool) -> None:
        if run.task is None or run.task.done() or run.done:
            return
        if run.cancel("timeout") and is_async:
            self.loop.call_later(ABANDON_AFTER, self.abandon, run)
