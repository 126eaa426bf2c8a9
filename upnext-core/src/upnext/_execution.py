"""Running one delivered job through the pipeline, from decode to its settlement.

The fixed head: decode the body, dead-letter a job past its `expires`
deadline, charge the lost runs a redelivery reveals, dead-letter an unknown
task or invalid arguments. Then the middleware stages
(before_run, around_run with the body's call at its centre, after_run), and
the fixed tail: the settlement (retry or dead-letter per the task's policy,
the result written with it), committed by the consumer, then after_settle.
A sync body runs on a daemon thread and is abandoned, not killed, when it
overruns its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future as ThreadFuture
from functools import partial
from typing import TYPE_CHECKING, Any

from upnext._flow_limits import FlowLimits
from upnext._job_settlements import cancelled_by_user, dead_letter_unrun, settle_decision
from upnext._joblog import JOB_LOG, log_given_back, log_settled, log_started
from upnext._pipeline import Pipeline, Stages
from upnext._result import ErrorInfo
from upnext._serializer import UndecodableBody, decode_body, one_line
from upnext._settlement import (
    Settlement,
    dead_letter,
    settle_attempt,
    settle_lost,
    settle_success,
    settle_unserializable_result,
)
from upnext._threads import DaemonThreadPool
from upnext._unique_run import UniqueJobs
from upnext.control import Reject
from upnext.control import Retry as RetryRequest
from upnext.errors import SerializationError
from upnext.middleware._builtins import (
    ABANDON_AFTER,
    Hooks,
    JobContext,
    LostRunIsolation,
    Timeout,
)
from upnext.middleware._types import Job, Outcome, OutcomeKind

if TYPE_CHECKING:
    from upnext._consumer import Consumer
    from upnext._jobrun import JobRun

__all__ = ["JobExecutor"]

log = logging.getLogger("upnext.worker")


class JobExecutor:
    """Executes a consumer's deliveries: the pipeline around each job's body."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.worker = worker = consumer.worker
        self.loop = consumer.loop
        self.flow = FlowLimits(worker)
        builtins = (
            LostRunIsolation(consumer),
            UniqueJobs(worker),
            JobContext(worker),
            Hooks(worker),
            Timeout(consumer.loop, self.abandon_task),
            self.flow,  # after Timeout: JobContext and Timeout lead, inlined
        )
        # `Worker(metrics=True)`'s counter is counted in the fixed tail, not as a stage.
        self.metrics = metrics = worker.metrics
        middleware = [m for m in worker.middleware if m is not metrics]
        self.pipeline = Pipeline([*builtins, *middleware], worker.hook_timeout)
        self.history = consumer.history
        self.call_body = self._call_body  # bound once: the hot path takes it per job
        self.threads = DaemonThreadPool(2 * worker.concurrency + 1, "upnext-sync")
        self.abandoned_threads = 0

    async def execute(self, run: JobRun) -> None:
        """Run one delivery to its settlement; give it back or drop it if cancelled."""
        consumer = self.consumer
        # Asked once per job: the line costs nothing more while INFO is off.
        run.logged = JOB_LOG.isEnabledFor(logging.INFO)
        try:
            settlement = await self._settlement_of(run)
            consumer.free_slot(run)
            # `commit`, inline: one coroutine less per job
            if not run.done and await consumer.commit(run, settlement) is None:
                job = run.job
                assert job is not None
                if self._settled(run, job, settlement, run.outcome):
                    await self._after_settle(job, settlement)
        except asyncio.CancelledError:
            await self._cancelled(run)
        except Exception:
            log.exception(
                "job %s: internal error; it will be redelivered", run.delivery.envelope.id
            )
        finally:
            if run.limit_slot is not None:  # its body never ran to its after_run
                consumer.spawn(self.flow.release(run, None))
            run.job = None  # job and run refer to each other: let refcounting free them
            consumer.free_slot(run)
            consumer.runs.pop(run.delivery, None)
            if consumer.parked:
                consumer.turn.set()

    async def _cancelled(self, run: JobRun) -> None:
        """Stopped early: give back (shutdown), settle `cancelled` (user) or drop (lease lost)."""
        if run.done:
            return
        if run.cancel_reason == "shutdown":
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we are in a task
            await self.consumer.release(run)
            if run.logged and run.started is not None:
                log_given_back(run.job, run, "the worker is stopping")
        elif run.cancel_reason == "user" and run.job is not None and run.job.body is not None:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we are in a task
            self.consumer.free_slot(run)
            # settled as never started (no attempt charged), so no attempt is counted
            await self.commit(run, run.job, cancelled_by_user(run.job, None), None)

    async def commit(
        self, run: JobRun, job: Job, settlement: Settlement, outcome: Outcome | None
    ) -> None:
        """Commit through the consumer; once durable, the tail, then after_settle."""
        if await self.consumer.commit(run, settlement) is None and self._settled(
            run, job, settlement, outcome
        ):
            await self._after_settle(job, settlement)

    def _settled(
        self, run: JobRun, job: Job, settlement: Settlement, outcome: Outcome | None
    ) -> bool:
        """The tail of a durable settle: log line, history, metrics; True if after_settle hears.

        A settle that was not durable has none: the job runs again, and is logged
        and counted then.
        """
        if run.logged:  # asked when the run began
            log_settled(job, run, settlement)
        if self.history is not None:
            self.history.record(job, run, settlement)
        if self.metrics is not None:
            self.metrics.count(job, outcome, settlement)
        return bool(settlement.events) or self.pipeline.hears_every_settle(job)

    async def _after_settle(self, job: Job, settlement: Settlement) -> None:
        pipeline = self.pipeline
        stages = pipeline.stages(job.task, bare=job.body is None or not job.body.headers)
        if stages.after_settle_inline:
            await pipeline.after_settle(job, settlement, stages, inline=True)
        if stages.after_settle and pipeline.wants_after_settle(stages, settlement):
            self.consumer.spawn(pipeline.after_settle(job, settlement, stages))

    async def _settlement_of(self, run: JobRun) -> Settlement:
        delivery = run.delivery
        try:
            body = decode_body(delivery.envelope.body, self.worker.max_payload)
        except UndecodableBody as exc:
            run.job = Job(run, function="", task=None, body=None)
            log.error("job %s dead-lettered: %s", delivery.envelope.id, exc)
            error = ErrorInfo(type="UndecodableBody", message=exc.detail)
            return dead_letter(delivery, reason=exc.reason, error=error, body=None)
        task = self.worker.tasks.get(body.fn)
        job = run.job = Job(run, function=body.fn, task=task, body=body)
        # Only a job no attempt was charged for can expire: once one ran, it started.
        if body.expires_at is not None and body.attempts == 0:
            late = time.time() - body.expires_at
            if late > 0:
                message = f"not started by its expires deadline ({late:.3f} s late)"
                return dead_letter_unrun(job, "expired", ErrorInfo(type="Expired", message=message))
        if delivery.redelivered:
            max_lost = task.max_lost_runs if task is not None else self.worker.max_lost_runs
            settlement, dead = settle_lost(delivery, body, max_lost)
            if dead:
                log.error("job %s dead-lettered: its worker was lost too often", body.id)
            return settlement
        if task is None:
            return self._unknown_task(run, body.fn, job)
        try:
            job.args, job.kwargs = task.signature.decode(body.args, body.kwargs)
        except Exception as exc:
            detail = one_line(exc) if hasattr(exc, "errors") else str(exc)  # type: ignore[arg-type]
            error = ErrorInfo(type=type(exc).__name__, message=detail)
            return dead_letter_unrun(job, "invalid arguments", error)
        if run.cancel_reason == "user":  # cancelled while it waited here
            return cancelled_by_user(job, None)
        if body.headers:
            stages = self.pipeline.by_task.get(task) or self.pipeline.stages(task)
        else:  # most jobs: no `headers_only` middleware
            stages = self.pipeline.bare_by_task.get(task) or self.pipeline.stages(task, bare=True)
        for middleware in (
            stages.before_run if body.lost else stages.before_run_first
        ):  # in order; the first decision wins
            try:
                decision = await middleware.before_run(job)
            except Exception as exc:
                now = time.time()
                worker_id = self.consumer.worker_id
                outcome = Outcome(task, body, job.attempt, worker_id, now, now, "error", None, exc)
                return self._settle(job, outcome)
            if decision is not None:
                return settle_decision(job, decision)
        outcome = await self._attempt(run, job, stages)
        if stages.after_run:
            await self.pipeline.after_run(job, outcome, stages)
        if outcome.kind == "success":  # the hot path, inline
            try:
                value_json = task.signature.dump_result(outcome.value)
                return settle_success(delivery, outcome, value_json, task.announces)
            except SerializationError as exc:
                return settle_unserializable_result(delivery, outcome, exc)
        return self._settle(job, outcome)

    def _unknown_task(self, run: JobRun, name: str, job: Job) -> Settlement:
        log.warning(
            "job %s dead-lettered: no task named %r on worker %s (it knows: %s)",
            job.id,
            name,
            self.worker.name,
            ", ".join(sorted(self.worker.tasks)) or "none",
        )
        error = ErrorInfo(type="UnknownTask", message=f"no task named {name!r} on this worker")
        return dead_letter_unrun(job, "unknown task", error)

    async def _attempt(self, run: JobRun, job: Job, stages: Stages) -> Outcome:
        """Call the body inside the around_run chain; how it ended."""
        run.started = started = time.time()
        if run.logged:
            log_started(job)
        kind: OutcomeKind = "success"
        value: Any = None
        exception: BaseException | None = None
        if stages.context is not None:
            stages.context.enter(job)
        timer = stages.timeout.arm(job) if stages.timeout is not None else None
        try:
            if stages.around_run_inside_out:
                call: Callable[[], Awaitable[Any]] = partial(self.call_body, job)
                for around_run in stages.around_run_inside_out:  # the first one outermost
                    call = partial(around_run, job, call)
                value = await call()
            else:
                value = await self.call_body(job)
        except asyncio.CancelledError as exc:
            reason = run.cancel_reason
            if reason != "timeout" and reason != "user":
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we are in a task
            if reason == "timeout":
                kind, exception = "timeout", self._timeout_error(job)
                exception.__cause__ = exc
            else:
                kind, exception = "cancelled", exc
        except RetryRequest as exc:
            kind, exception = "retry", exc
        except Reject as exc:
            kind, exception = "rejected", exc
        except Exception as exc:
            kind, exception = "error", exc
        finally:
            if timer is not None:
                timer.cancel()
        assert job.task is not None
        assert job.body is not None
        run.finished = finished = time.time()
        run.outcome = outcome = Outcome(
            job.task,
            job.body,
            job.attempt,
            self.consumer.worker_id,
            started,
            finished,
            kind,
            value,
            exception,
        )
        return outcome

    @staticmethod
    def _timeout_error(job: Job) -> TimeoutError:
        assert job.task is not None
        return TimeoutError(f"{job.task.name} exceeded its {job.task.timeout}s timeout")

    def _settle(self, job: Job, outcome: Outcome) -> Settlement:
        """The fixed tail: what an outcome writes (result, retry or dead letter)."""
        if outcome.kind == "success":
            task = outcome.task
            try:
                value_json = task.signature.dump_result(outcome.value)
                return settle_success(job._run.delivery, outcome, value_json, task.announces)
            except SerializationError as exc:
                return settle_unserializable_result(job.delivery, outcome, exc)
        if outcome.kind == "cancelled":
            return cancelled_by_user(job, outcome.started)
        return settle_attempt(job.delivery, outcome)

    async def _call_body(self, job: Job) -> Any:
        """The centre of the chain: the task's function with the job's arguments."""
        task = job.task
        assert task is not None
        assert job.args is not None
        assert job.kwargs is not None
        if task.is_async:
            return await task.fn(*job.args, **job.kwargs)
        ctx = contextvars.copy_context()
        thread_future = self.threads.submit(ctx.run, task.fn, *job.args, **job.kwargs)
        try:
            return await asyncio.wrap_future(thread_future)
        except asyncio.CancelledError:
            if not thread_future.done():
                self._abandon_thread(thread_future, task.name)
            raise

    def abandon_task(self, run: JobRun) -> None:
        """The body ignored its cancellation: settle it as timed out without it."""
        job = run.job
        if run.task is None or run.task.done() or run.done or run.started is None or job is None:
            return
        log.error(
            "job %s (%s) ignored its cancellation for %.0fs; abandoned, outcome discarded",
            job.id,
            job.function,
            ABANDON_AFTER,
        )
        assert job.task is not None
        assert job.body is not None
        error = self._timeout_error(job)
        run.finished = time.time()
        outcome = Outcome(
            job.task,
            job.body,
            job.attempt,
            self.consumer.worker_id,
            run.started,
            run.finished,
            "timeout",
            None,
            error,
        )
        self.consumer.free_slot(run)
        # its own outcome: the body may still return and set `run.outcome` meanwhile
        self.consumer.spawn(self.commit(run, job, self._settle(job, outcome), outcome))

    def _abandon_thread(self, thread_future: ThreadFuture[Any], task_name: str) -> None:
        self.abandoned_threads += 1
        log.warning(
            "sync task %s overran its timeout; its thread is abandoned, not killed", task_name
        )

        def finished(_: ThreadFuture[Any]) -> None:
            if not self.loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self.loop.call_soon_threadsafe(self._thread_returned)

        thread_future.add_done_callback(finished)
        concurrency = self.worker.concurrency
        if self.abandoned_threads > concurrency:
            self.consumer.fatal = (
                f"{self.abandoned_threads} sync threads abandoned after timeouts"
                f" (more than concurrency={concurrency}); restart needed"
            )
            log.critical("%s", self.consumer.fatal)
            self.worker.request_stop()

    def _thread_returned(self) -> None:
        self.abandoned_threads -= 1
