"""A running worker: receive, execute, settle and heartbeat, group-committed.

At most one `receive`, one `settle` and one `extend` are in flight per
worker; whatever arrives meanwhile joins the next call. Jobs run as asyncio
tasks owned by the consumer; sync tasks run on a thread pool.

A job whose last run was lost with its worker (a *suspect*) runs alone: it
starts only once this worker holds no other job, and nothing else is received
or started until its body ends, so that if it takes the worker down again
only it is charged the lost run (docs/semantics.md, "Lost runs").
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from upnext._client import Batcher, Client
from upnext._context import Context, JobScope, current_scope
from upnext._hooks import call_hook
from upnext._result import ErrorInfo
from upnext._serializer import AttemptRecord, JobBody, UndecodableBody, decode_body, one_line
from upnext._settlement import (
    Attempt,
    Settlement,
    dead_letter,
    settle_attempt,
    settle_lost,
    settle_success,
)
from upnext._threads import DaemonThreadPool
from upnext.broker.protocol import (
    Ack,
    DeadLetter,
    Delivery,
    Prefetcher,
    Release,
    SettleItem,
    SettleOutcome,
)
from upnext.control import Reject
from upnext.control import Retry as RetryRequest
from upnext.errors import BrokerError, LeaseLost, SerializationError
from upnext.hooks import HookEvent

if TYPE_CHECKING:
    from upnext._task import Task
    from upnext._worker import Worker

__all__ = ["Consumer"]

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


class Consumer:
    """Consumes a worker's queues until stopped."""

    def __init__(self, worker: Worker, client: Client) -> None:
        self.worker = worker
        self.client = client
        self.broker = client.broker
        self.prefetcher = self.broker if isinstance(self.broker, Prefetcher) else None
        self.loop = asyncio.get_running_loop()
        self.queues = worker.consumed_queues()
        self.lease = worker.lease
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.active = 0
        self.lent = 0
        self.capacity = worker.concurrency
        self.prefetch = worker.prefetch
        self.buffer: deque[JobRun] = deque()
        self.runs: dict[Delivery, JobRun] = {}
        self.room = asyncio.Event()
        # Suspects: how many wait for their turn, and the one running alone.
        self.parked = 0
        self.isolated: JobRun | None = None
        self.turn = asyncio.Event()
        self.stopping = False
        self.fatal: str | None = None
        self.settler: Batcher[SettleItem, SettleOutcome] = Batcher(self._settle_batch)
        self.background: set[asyncio.Task[Any]] = set()
        self.abandoned_threads = 0
        self.executor = DaemonThreadPool(2 * worker.concurrency + 1, "upnext-sync")
        self.plugins_active = worker.plugins.active
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Begin receiving (and heartbeating, where leases are timed)."""
        self._loops.append(self.loop.create_task(self._receive_loop(), name="upnext-receive"))
        if self.broker.capabilities.timed_leases:
            self._loops.append(self.loop.create_task(self._heartbeat(), name="upnext-heartbeat"))

    async def stop(self, grace: float) -> None:
        """Stop receiving, finish in-flight jobs within `grace`, release the rest."""
        self.stopping = True
        self._loops[0].cancel()
        await asyncio.gather(self._loops[0], return_exceptions=True)
        await self._release_buffered()
        for run in list(self.runs.values()):
            if run.parked and run.task is not None:  # not started: give back at once
                run.released = True
                run.task.cancel()
        pending = {run.task for run in self.runs.values() if run.task and not run.task.done()}
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for run in list(self.runs.values()):
            if run.task is not None and not run.task.done():
                run.released = True
                run.task.cancel()
        leftovers = [run.task for run in self.runs.values() if run.task is not None]
        if leftovers:
            await asyncio.wait(leftovers, timeout=ABANDON_AFTER)
        for task in self._loops[1:]:
            task.cancel()
        await asyncio.gather(*self._loops[1:], return_exceptions=True)
        if self.background:
            await asyncio.wait(self.background, timeout=self.worker.hook_timeout)
        self.executor.shutdown()

    async def _release_buffered(self) -> None:
        """Give back at once every delivery received but not started (not an attempt)."""
        buffered = [run for run in self.buffer if not run.lease_lost]
        self.buffer.clear()
        if not buffered:
            return
        try:
            await self.settler.submit_many([Release(run.delivery) for run in buffered])
        except Exception as exc:
            log.warning(
                "releasing %d unstarted jobs failed (%s); they return after their lease",
                len(buffered),
                exc,
            )
        for run in buffered:
            run.done = True
            self.runs.pop(run.delivery, None)

    def idle(self) -> bool:
        """Nothing running, nothing waiting to be settled, no hook pending."""
        return not self.runs and not self.background and len(self.settler) == 0

    # -- slots ---------------------------------------------------------------

    def lend_slot(self) -> None:
        """A job waits on another job: let its slot run something else meanwhile."""
        self.lent += 1
        if self.isolated is not None:
            # The suspect waits on another job, which may have to run here.
            log.info(
                "job %s waits on another job: other jobs may run beside it now",
                self.isolated.delivery.envelope.id,
            )
            self.isolated = None
            self._resume_receiving()
        self._dispatch()  # a buffered job (often the awaited child) may start now
        self.room.set()

    def return_slot(self) -> None:
        """The waiting job resumes (possibly over capacity until a job ends)."""
        self.lent -= 1

    def _free_slot(self, run: JobRun) -> None:
        if not run.slot_freed:
            run.slot_freed = True
            self.active -= 1
            if self.isolated is run:
                self.isolated = None
                self._resume_receiving()
            self._dispatch()
            self.room.set()

    def _dispatch(self) -> None:
        """Start buffered deliveries while there are free slots (and no suspect waits)."""
        buffer = self.buffer
        while (
            buffer
            and self.active < self.capacity + self.lent
            and not self.stopping
            and self.fatal is None
            and self.isolated is None
            and (not self.parked or self.lent)  # a waiting job's child must be able to run
        ):
            run = buffer.popleft()
            if run.lease_lost:
                self.runs.pop(run.delivery, None)
                continue
            self.active += 1
            run.task = self.loop.create_task(self._execute(run))

    # -- receive -------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Keep up to concurrency + prefetch deliveries held, receiving in batches.

        A receive is made only when at least a batch's worth of room exists
        (half the prefetch, at least one), so a worker draining short jobs
        asks the broker for many at a time instead of one per finished job.
        """
        backoff = 0.05
        wait = self.worker.receive_wait
        batch = max(1, self.prefetch // 2)
        while not self.stopping:
            if self._suspects_turn():
                self.room.clear()
                await self.room.wait()
                continue
            free = self.capacity + self.lent + self.prefetch - self.active - len(self.buffer)
            if free < batch and not (free > 0 and not self.buffer and self.active < self.capacity):
                self.room.clear()
                await self.room.wait()
                continue
            try:
                deliveries = await self.broker.receive(
                    self.queues, limit=free, lease=self.lease, wait=wait
                )
            except Exception as exc:  # a backend bug must not wedge the worker either
                log.warning(
                    "receive from %s failed: %s; retrying in %.2fs", self.client.name, exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            # The broker starts a lease when it hands the job out, just before
            # returning; a receive that blocked a long time must not eat into it.
            lease_until = time.monotonic() + self.lease
            for delivery in deliveries:
                run = JobRun(delivery, lease_until)
                self.runs[delivery] = run
                self.buffer.append(run)
            self._dispatch()

    async def _pause_receiving(self) -> None:
        """Cancel the receive loop (a cancelled receive hands out nothing)."""
        receiver = self._loops[0]
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)

    def _resume_receiving(self) -> None:
        if not self.stopping and self._loops[0].done():
            self._loops[0] = self.loop.create_task(self._receive_loop(), name="upnext-receive")

    def _suspects_turn(self) -> bool:
        """A suspect waits for its turn or runs alone: receive nothing meanwhile."""
        return self.isolated is not None or (self.parked > 0 and not self.lent)

    # -- heartbeat -----------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            runs = [run for run in self.runs.values() if not run.done]
            now = time.monotonic()
            for run in runs:
                if run.lease_until <= now:
                    self._lose(run, "its lease expired before it could be extended")
            runs = [run for run in runs if not run.lease_lost]
            if not runs:
                continue
            try:
                outcomes = await self.broker.extend([r.delivery for r in runs], lease=self.lease)
            except Exception as exc:
                log.warning("extending %d leases failed: %s", len(runs), exc)
                continue
            for run, outcome in zip(runs, outcomes, strict=True):
                if isinstance(outcome, LeaseLost):
                    self._lose(run, "the broker reports its lease lost")
                else:
                    run.lease_until = now + self.lease

    def _lose(self, run: JobRun, why: str) -> None:
        if run.lease_lost or run.done:
            return
        run.lease_lost = True
        log.warning("job %s cancelled here: %s", run.delivery.envelope.id, why)
        if run.task is not None:
            run.task.cancel()
        else:  # still buffered: drop it, another worker may hold it now
            self.runs.pop(run.delivery, None)

    # -- settle --------------------------------------------------------------

    async def _settle_batch(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        delay = 0.05
        while True:
            try:
                return await self.broker.settle(items)
            except BrokerError as exc:
                if self.stopping and delay > 1.0:
                    raise
                log.warning("settle of %d items failed: %s; retrying", len(items), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _write_result(self, settlement: Settlement) -> None:
        """Store a result in the separate store, retrying while it is unreachable."""
        assert settlement.result is not None
        delay = 0.05
        for _ in range(20):
            try:
                await self.client.results.submit(settlement.result)
                return
            except BrokerError as exc:
                log.warning(
                    "writing result of job %s failed: %s; retrying", settlement.result.job_id, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await self.client.results.submit(settlement.result)

    async def _commit(self, run: JobRun, settlement: Settlement) -> None:
        """Write the result (if separate), settle, then announce — in that order."""
        item = settlement.item
        run.done = True
        if settlement.result is not None:
            if self.client.same and isinstance(item, Ack):
                item = Ack(item.delivery, settlement.result)
            elif self.client.same and isinstance(item, DeadLetter):
                item = DeadLetter(item.delivery, item.record, settlement.result)
            else:
                await self._write_result(settlement)
        outcome = await self.settler.submit(item)
        self.runs.pop(run.delivery, None)
        if self.parked:
            self.turn.set()
        if isinstance(outcome, LeaseLost):
            log.warning(
                "job %s: lease lost before settle; outcome discarded", run.delivery.envelope.id
            )
            return
        self._announce(settlement.events, self._task_of(settlement))

    def _task_of(self, settlement: Settlement) -> Task[Any, Any] | None:
        if not settlement.events:
            return None
        return self.worker.tasks.get(settlement.events[0][2].function)

    def _announce(
        self, events: list[tuple[str | None, str, HookEvent]], task: Task[Any, Any] | None
    ) -> None:
        calls = []
        for hook_name, plugin_name, event in events:
            hook = getattr(task.hooks, hook_name) if task and hook_name else None
            if hook is not None:
                calls.append((hook, event, f"{task.name if task else '?'}.{hook_name}"))
            if plugin_name in self.plugins_active:
                calls.append((None, event, plugin_name))
        if calls:
            bg = self.loop.create_task(self._run_hooks(calls))
            self.background.add(bg)
            bg.add_done_callback(self.background.discard)

    async def _run_hooks(self, calls: list[tuple[Any, HookEvent, str]]) -> None:
        timeout = self.worker.hook_timeout
        for hook, event, label in calls:
            if hook is None:
                await self.worker.plugins.emit(label, event, timeout)
            else:
                await call_hook(hook, event, timeout, label)

    # -- execute -------------------------------------------------------------

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
        if body.history and body.history[-1].outcome == "lost" and not await self._isolate(run):
            await self._release(run)  # the worker stops (or is fatal): it never started here
            return None
        attempt = await self._attempt(run, task, body, args, kwargs)
        if attempt.kind == "success":
            try:
                value_json = task.signature.dump_result(attempt.value)
            except SerializationError as exc:
                info = ErrorInfo(type="SerializationError", message=str(exc))
                record = AttemptRecord(
                    number=attempt.number,
                    outcome="error",
                    worker=self.worker_id,
                    started=attempt.started,
                    finished=attempt.finished,
                    error=str(info),
                )
                failed = body.model_copy(
                    update={"attempts": attempt.number, "history": [*body.history, record]}
                )
                return dead_letter(
                    delivery,
                    reason="unserializable result",
                    error=info,
                    body=failed,
                    attempts=attempt.number,
                    max_attempts=task.policy.max_attempts,
                    started=attempt.started,
                    exception=exc,
                )
            return settle_success(delivery, attempt, value_json, task.announces)
        return settle_attempt(delivery, attempt)

    async def _isolate(self, run: JobRun) -> bool:
        """Wait until this suspect is the only job the worker holds; False if it must not start.

        Jobs already running finish first; nothing new starts meanwhile. Then
        every other delivery held here (prefetched, or suspects still waiting)
        is released, uncounted, before the suspect's body starts: if it takes
        the worker down again, it alone is charged the lost run.
        """
        run.parked = True
        self.parked += 1
        try:
            while not (self.isolated is None and self._alone(run)) and not self._closing():
                self.turn.clear()
                await self.turn.wait()
        finally:
            run.parked = False
            self.parked -= 1
        if self._closing():
            return False
        self.isolated = run
        log.info(
            "job %s runs alone: its last run was lost with its worker", run.delivery.envelope.id
        )
        await self._pause_receiving()
        waiting = [r.task for r in self.runs.values() if r.parked and r.task is not None]
        for other in self.runs.values():
            if other.parked and other.task is not None:
                other.released = True
                other.task.cancel()
        await self._release_buffered()
        if self.prefetcher is not None:
            try:
                await self.prefetcher.give_back_prefetched()
            except Exception as exc:
                log.warning("giving back prefetched jobs failed: %s", exc)
        if waiting:
            await asyncio.wait(waiting)
        return True

    def _closing(self) -> bool:
        return self.stopping or self.fatal is not None

    def _alone(self, run: JobRun) -> bool:
        """No delivery held here has started but `run` (and suspects still waiting)."""
        return all(r is run or r.task is None or r.parked for r in self.runs.values())

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
