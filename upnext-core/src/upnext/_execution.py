"""Running one delivered job: decide its settlement, run its body, enforce its timeout.

`JobExecution` is the half of the consumer that works on a single delivery:
decode it, charge a lost run a redelivery reveals, run the body (async on the
loop, sync on a daemon thread) under its timeout, and abandon a body that
ignores its cancellation. Receiving, slots, heartbeats and settling live in
`_consumer.py`, whose `Consumer` is the only class built on this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from upnext._context import Context, JobScope, current_scope
from upnext._hooks import call_hook
from upnext._result import ErrorInfo
from upnext._serializer import JobBody, UndecodableBody, decode_body, one_line
from upnext._settlement import (
    Attempt,
    Settlement,
    dead_letter,
    settle_attempt,
    settle_lost,
    settle_success,
    settle_unserializable_result,
)
from upnext.broker.protocol import Delivery, Release, SettleItem, SettleOutcome
from upnext.control import Reject
from upnext.control import Retry as RetryRequest
from upnext.errors import BrokerError, SerializationError
from upnext.hooks import HookEvent

if TYPE_CHECKING:
    from upnext._client import Batcher
    from upnext._task import Task
    from upnext._threads import DaemonThreadPool
    from upnext._worker import Worker

__all__ = ["ABANDON_AFTER", "JobExecution", "JobRun"]

log = logging.getLogger("upnext.worker")

ABANDON_AFTER = 5.0  # seconds an async task may ignore its cancellation before it is abandoned


@dataclass(slots=True, eq=False)
class JobRun:
    """One delivery being worked on, and why it might be stopped early."""

    delivery: Delivery
    lease_until: float
    task: asyncio.Task[None] | None = None
    timed_out: bool = False
    lease_lost: bool = False
    released: bool = False
    parked: bool = False  # a suspect waiting until it can run alone
    done: bool = False
    slot_freed: bool = False
    # (task, body, attempt number, start time) while the body runs
    running: tuple[Task[Any, Any], JobBody, int, float] | None = None


class JobExecution:
    """Executes deliveries for a `Consumer`, which provides the state below."""

    worker: Worker
    worker_id: str
    loop: asyncio.AbstractEventLoop
    executor: DaemonThreadPool
    plugins_active: frozenset[str]
    settler: Batcher[SettleItem, SettleOutcome]
    runs: dict[Delivery, JobRun]
    background: set[asyncio.Task[Any]]
    parked: int
    turn: asyncio.Event
    abandoned_threads: int
    fatal: str | None

    if TYPE_CHECKING:  # provided by Consumer

        def _free_slot(self, run: JobRun) -> None: ...

        async def _commit(self, run: JobRun, settlement: Settlement) -> None: ...

        async def _isolate(self, run: JobRun) -> bool: ...

    async def _execute(self, run: JobRun) -> None:
        try:
            settlement = await self._decide(run)
            self._free_slot(run)
            if settlement is not None and not run.done:
                await self._commit(run, settlement)
        except asyncio.CancelledError:
            if run.released and not run.done:
                await self._release(run)
        except Exception:
            log.exception(
                "job %s: internal error; it will be redelivered", run.delivery.envelope.id
            )
        finally:
            self._free_slot(run)
            self.runs.pop(run.delivery, None)
            if self.parked:
                self.turn.set()

    async def _release(self, run: JobRun) -> None:
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we are in a task
        try:
            await self.settler.submit(Release(run.delivery))
        except BrokerError as exc:
            log.warning(
                "job %s: release failed (%s); it returns after its lease",
                run.delivery.envelope.id,
                exc,
            )
        run.done = True

    async def _decide(self, run: JobRun) -> Settlement | None:
        delivery = run.delivery
        try:
            body = decode_body(delivery.envelope.body, self.worker.max_payload)
        except UndecodableBody as exc:
            log.error("job %s dead-lettered: %s", delivery.envelope.id, exc)
            error = ErrorInfo(type="UndecodableBody", message=exc.detail)
            return dead_letter(delivery, reason=exc.reason, error=error, body=None)
        task = self.worker.tasks.get(body.fn)
        if delivery.redelivered:
            max_lost = task.max_lost_runs if task is not None else self.worker.max_lost_runs
            settlement, dead = settle_lost(delivery, body, max_lost)
            if dead:
                log.error("job %s dead-lettered: its worker was lost too often", body.id)
            return settlement
        if task is None:
            error = ErrorInfo(
                type="UnknownTask", message=f"no task named {body.fn!r} on this worker"
            )
            log.warning(
                "job %s dead-lettered: no task named %r on worker %s (it knows: %s)",
                body.id,
                body.fn,
                self.worker.name,
                ", ".join(sorted(self.worker.tasks)) or "none",
            )
            return dead_letter(
                delivery, reason="unknown task", error=error, body=body, attempts=body.attempts
            )
        try:
            args, kwargs = task.signature.decode(body.args, body.kwargs)
        except Exception as exc:
            detail = one_line(exc) if hasattr(exc, "errors") else str(exc)  # type: ignore[arg-type]
            error = ErrorInfo(type=type(exc).__name__, message=detail)
            return dead_letter(
                delivery,
                reason="invalid arguments",
                error=error,
                body=body,
                attempts=body.attempts,
                max_attempts=task.policy.max_attempts,
            )
        # On its last chance (one more lost run dead-letters it), a job runs alone.
        if 0 < task.max_lost_runs <= body.lost and not await self._isolate(run):
            await self._release(run)  # the worker stops (or is fatal): it never started here
            return None
        attempt = await self._attempt(run, task, body, args, kwargs)
        if attempt.kind == "success":
            try:
                value_json = task.signature.dump_result(attempt.value)
                return settle_success(delivery, attempt, value_json, task.announces)
            except SerializationError as exc:
                return settle_unserializable_result(delivery, attempt, exc)
        return settle_attempt(delivery, attempt)

    async def _attempt(
        self,
        run: JobRun,
        task: Task[Any, Any],
        body: JobBody,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Attempt:
        number = body.attempts + 1
        context = Context(
            job_id=body.id,
            attempt=number,
            max_attempts=task.policy.max_attempts,
            function=body.fn,
            queue=body.queue,
            parent_id=body.parent_id,
            root_id=body.root_id or body.id,
            replay_of=body.replay_of,
        )
        current_scope.set(JobScope(context, self.worker))
        if task.hooks.on_start is not None or "upnext_job_started" in self.plugins_active:
            await self._on_start(task, context)
        started = time.time()
        run.running = (task, body, number, started)
        kind: Any = "success"
        value: Any = None
        exception: BaseException | None = None
        try:
            value = await self._invoke(run, task, args, kwargs)
        except asyncio.CancelledError as exc:
            if not run.timed_out:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we are in a task
            kind = "timeout"
            exception = TimeoutError(f"{task.name} exceeded its {task.timeout}s timeout")
            exception.__cause__ = exc
        except RetryRequest as exc:
            kind, exception = "retry", exc
        except Reject as exc:
            kind, exception = "rejected", exc
        except Exception as exc:
            kind, exception = "error", exc
        return Attempt(
            task, body, number, self.worker_id, started, time.time(), kind, value, exception
        )

    async def _on_start(self, task: Task[Any, Any], context: Context) -> None:
        event = HookEvent(
            job_id=context.job_id,
            function=context.function,
            queue=context.queue,
            attempt=context.attempt,
            max_attempts=context.max_attempts,
            status="active",
        )
        if task.hooks.on_start is not None:
            await call_hook(
                task.hooks.on_start, event, self.worker.hook_timeout, f"{task.name}.on_start"
            )
        if "upnext_job_started" in self.plugins_active:
            await self.worker.plugins.emit("upnext_job_started", event, self.worker.hook_timeout)

    async def _invoke(
        self, run: JobRun, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        timer = self.loop.call_later(task.timeout, self._deadline, run, task)
        try:
            if task.is_async:
                return await task.fn(*args, **kwargs)
            ctx = contextvars.copy_context()
            thread_future = self.executor.submit(ctx.run, task.fn, *args, **kwargs)
            try:
                return await asyncio.wrap_future(thread_future)
            except asyncio.CancelledError:
                if not thread_future.done():
                    self._abandon_thread(thread_future, task)
                raise
        finally:
            timer.cancel()

    def _deadline(self, run: JobRun, task: Task[Any, Any]) -> None:
        if run.task is None or run.task.done() or run.done:
            return
        run.timed_out = True
        run.task.cancel()
        if task.is_async:
            self.loop.call_later(ABANDON_AFTER, self._abandon_task, run, task)

    def _abandon_task(self, run: JobRun, task: Task[Any, Any]) -> None:
        """The body ignored its cancellation: settle it as timed out without it."""
        if run.task is None or run.task.done() or run.done or run.running is None:
            return
        log.error(
            "job %s (%s) ignored its cancellation for %.0fs; abandoned, outcome discarded",
            run.delivery.envelope.id,
            task.name,
            ABANDON_AFTER,
        )
        _, body, number, started = run.running
        exc = TimeoutError(f"{task.name} exceeded its {task.timeout}s timeout")
        attempt = Attempt(
            task, body, number, self.worker_id, started, time.time(), "timeout", None, exc
        )
        self._free_slot(run)
        bg = self.loop.create_task(self._commit(run, settle_attempt(run.delivery, attempt)))
        self.background.add(bg)
        bg.add_done_callback(self.background.discard)

    def _abandon_thread(self, thread_future: ThreadFuture[Any], task: Task[Any, Any]) -> None:
        self.abandoned_threads += 1
        log.warning(
            "sync task %s overran its timeout; its thread is abandoned, not killed", task.name
        )

        def finished(_: ThreadFuture[Any]) -> None:
            if not self.loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self.loop.call_soon_threadsafe(self._thread_returned)

        thread_future.add_done_callback(finished)
        if self.abandoned_threads > self.worker.concurrency:
            self.fatal = (
                f"{self.abandoned_threads} sync threads abandoned after timeouts"
                f" (more than concurrency={self.worker.concurrency}); restart needed"
            )
            log.critical("%s", self.fatal)
            self.worker.request_stop()

    def _thread_returned(self) -> None:
        self.abandoned_threads -= 1
