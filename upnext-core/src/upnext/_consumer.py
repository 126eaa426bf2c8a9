"""A running worker: receive, dispatch, heartbeat and group commit.

At most one `receive`, one `settle` and one `extend` are in flight per
worker; whatever arrives meanwhile joins the next call. Jobs run as asyncio
tasks owned by the consumer; what one job goes through (the middleware
pipeline, its body, its settlement) is `_execution.JobExecutor`'s.

The consumer also keeps the state a job on its last chance (a *suspect*) needs
to run alone (`parked`, `isolated`, `turn`); the built-in `LostRunIsolation`
middleware drives it (docs/semantics.md, "Lost runs").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from upnext._backoff import Backoff
from upnext._client import Batcher, Client
from upnext._execution import JobExecutor
from upnext._finished import FinishedCounts
from upnext._group_settle import GroupSettle
from upnext._history import JobHistory
from upnext._joblog import log_received
from upnext._jobrun import JobRun, running_jobs
from upnext._paused import PauseGate
from upnext._receiving import give_back, receive_sliced, stop_receiver
from upnext._settlement import Settlement
from upnext._tick import WorkerTick, consumer_tick
from upnext.broker.protocol import (
    Ack,
    DeadLetter,
    Delivery,
    Prefetcher,
    Release,
    SettleItem,
    SettleOutcome,
)
from upnext.errors import BrokerError, LeaseLost
from upnext.middleware._builtins import ABANDON_AFTER
from upnext.workers import RunningJob

if TYPE_CHECKING:
    from upnext._worker import Worker
    from upnext.middleware._types import CancelReason

__all__ = ["Consumer"]

log = logging.getLogger("upnext.worker")


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
        self.settler: Batcher[SettleItem, SettleOutcome] = Batcher(
            GroupSettle(client, lambda: self.stopping)
        )
        self.background: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._receive_stopped = asyncio.Event()  # ends the receive loop (see `_receiving`)
        # What it finished, for the tick: the jobs (where state is kept) and counts per queue.
        self.history = JobHistory() if worker.job_history and client.state is not None else None
        self.finished = FinishedCounts()
        self.execution = JobExecutor(self)
        self.tick: WorkerTick | None = None
        self.gate = PauseGate(self)  # the paused queues, as the tick reads them

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Begin receiving (and heartbeating, where leases are timed; ticking, with state)."""
        self._loops.append(self.loop.create_task(self._receive_loop(), name="upnext-receive"))
        if self.broker.capabilities.timed_leases:
            self._loops.append(self.loop.create_task(self._heartbeat(), name="upnext-heartbeat"))
        if self.client.state is not None:
            self.tick = consumer_tick(self, self.client.state)
            self.tick.start()

    async def stop(self, grace: float) -> None:
        """Stop receiving, finish in-flight jobs within `grace`, release the rest."""
        self.stopping = True
        await self.pause_receiving()
        await self.release_buffered()
        for run in list(self.runs.values()):
            if run.parked and run.task is not None:  # not started: give back at once
                run.cancel("shutdown")
        pending = {run.task for run in self.runs.values() if run.task and not run.task.done()}
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for run in list(self.runs.values()):
            if run.task is not None and not run.task.done() and not run.cancel("shutdown"):
                run.task.cancel()  # already cancelled (timeout, user), still running: again
        leftovers = [run.task for run in self.runs.values() if run.task is not None]
        if leftovers:
            await asyncio.wait(leftovers, timeout=ABANDON_AFTER)
        for task in self._loops[1:]:
            task.cancel()
        await asyncio.gather(*self._loops[1:], return_exceptions=True)
        if self.tick is not None:
            await self.tick.stop()
        if self.background:
            await asyncio.wait(self.background, timeout=self.worker.hook_timeout)
        self.execution.threads.shutdown()

    async def release_buffered(self, runs: list[JobRun] | None = None) -> None:
        """Give back at once every buffered delivery, or `runs` taken out (not an attempt)."""
        if runs is None:
            runs = list(self.buffer)
            self.buffer.clear()
        buffered = [run for run in runs if not run.lease_lost]
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

    def free_slot(self, run: JobRun) -> None:
        """The run's body ended (or never ran): its slot may start the next delivery."""
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
            run.task = self.loop.create_task(self.execution.execute(run))

    # -- receive -------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Keep up to concurrency + prefetch deliveries held, receiving in batches.

        A receive is made only when at least a batch's worth of room exists
        (half the prefetch, at least one), so a worker draining short jobs
        asks the broker for many at a time instead of one per finished job.
        """
        stopped = self._receive_stopped
        backoff = Backoff(first=0.05, cap=5.0)
        wait = self.worker.receive_wait
        batch = max(1, self.prefetch // 2)
        while not stopped.is_set():
            if self._suspects_turn():
                self.room.clear()
                await self.room.wait()
                continue
            free = self.capacity + self.lent + self.prefetch - self.active - len(self.buffer)
            queues = self.gate.receivable()  # none while all are paused (`_paused`)
            if not queues or (
                free < batch and not (free > 0 and not self.buffer and self.active < self.capacity)
            ):
                self.room.clear()
                await self.room.wait()
                continue
            try:
                deliveries = await receive_sliced(
                    self.broker,
                    queues,
                    limit=free,
                    lease=self.lease,
                    wait=wait,
                    stopped=stopped,
                    changed=self.gate.changed,
                )
            except Exception as exc:  # a backend bug must not wedge the worker either
                pause = next(backoff)
                log.warning(
                    "receive from %s failed: %s; retrying in %.2fs", self.client.name, exc, pause
                )
                with contextlib.suppress(TimeoutError):  # a stop ends the pause
                    async with asyncio.timeout(pause):
                        await stopped.wait()
                continue
            backoff.reset()
            if stopped.is_set():  # no longer wanted: back at once, uncounted
                await give_back(self.settler.submit_many, deliveries)
                return
            started = self._take_in(deliveries)
            # Nothing of a batch stays alive here through the next receive (a
            # 10 MB body did, until that receive returned).
            del deliveries
            if started:
                # The jobs just started take their first step before the next
                # receive's bookkeeping (latency of a lone job on an idle worker).
                await asyncio.sleep(0)

    def _take_in(self, deliveries: list[Delivery]) -> bool:
        """Buffer and dispatch a received batch; True if it held any job."""
        # The broker starts a lease when it hands the job out, just before
        # returning; a receive that blocked a long time must not eat into it.
        lease_until = time.monotonic() + self.lease
        for delivery in deliveries:
            run = JobRun(delivery, lease_until)
            self.runs[delivery] = run
            self.buffer.append(run)
        log_received(deliveries)  # DEBUG only, asked once per batch
        self.gate.hold_back()  # a queue paused while this receive was in flight
        self._dispatch()
        return bool(deliveries)

    async def pause_receiving(self) -> None:
        """End the receive loop; its receive in flight returns, and what it took goes back."""
        self.room.set()
        await stop_receiver(self._loops[0], self._receive_stopped, self.broker)

    def _resume_receiving(self) -> None:
        if self.stopping or self.isolated is not None:
            return
        receiver = self._loops[0]
        if receiver.done():
            self._receive_stopped = asyncio.Event()
            self._loops[0] = self.loop.create_task(self._receive_loop(), name="upnext-receive")
        elif self._receive_stopped.is_set():  # still ending (a pause cut short): after it
            receiver.add_done_callback(lambda _: self._resume_receiving())

    def _suspects_turn(self) -> bool:
        """A suspect waits for its turn or runs alone: receive nothing meanwhile."""
        return self.isolated is not None or (self.parked > 0 and not self.lent)

    # -- heartbeat -----------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            # Finished runs too, until settled (then they leave `runs`): a settle
            # or a result write that waits must not let the lease run out.
            runs = [run for run in self.runs.values() if not run.lease_lost]
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
        run.cancel("lease_lost")
        if run.task is None:  # still buffered: drop it, another worker may hold it now
            self.runs.pop(run.delivery, None)

    # -- settle --------------------------------------------------------------

    async def commit(self, run: JobRun, settlement: Settlement) -> SettleOutcome:
        """Write the result (if separate), then settle; None once durable, else LeaseLost."""
        item = settlement.item
        run.done = True
        try:  # leased meanwhile (the heartbeat extends every run in `runs`)
            if settlement.result is not None:
                if self.client.same and isinstance(item, Ack):
                    item = Ack(item.delivery, settlement.result)
                elif self.client.same and isinstance(item, DeadLetter):
                    item = DeadLetter(item.delivery, item.record, settlement.result)
                else:
                    await self.client.write_result(settlement.result)
            outcome: SettleOutcome = await self.settler.submit(item)
        finally:
            self.runs.pop(run.delivery, None)
        if self.parked:
            self.turn.set()
        if isinstance(outcome, LeaseLost):
            log.warning("job %s: outcome discarded (%s)", run.delivery.envelope.id, outcome)
        else:
            self.finished.count(run.delivery.envelope.queue, settlement.status)
        return outcome

    async def release(self, run: JobRun) -> None:
        """Give a delivery back at once, uncounted (a failure is logged: its lease expires)."""
        try:
            await self.settler.submit(Release(run.delivery))
        except BrokerError as exc:
            log.warning(
                "job %s: release failed (%s); it returns after its lease",
                run.delivery.envelope.id,
                exc,
            )
        run.done = True

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background; `stop` waits up to hook_timeout for it."""
        task = self.loop.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- suspects ------------------------------------------------------------

    def closing(self) -> bool:
        """Stopping, or failed for good: no suspect may start now."""
        return self.stopping or self.fatal is not None

    def running_jobs(self) -> list[RunningJob]:
        """Every job this worker holds and has decoded (the worker tick reports them)."""
        return running_jobs(self.runs.values())

    def cancel_job(self, job_id: str, reason: CancelReason = "user") -> bool:
        """Stop the job `job_id` held here for `reason`; True if it was found and stopped.

        A ``user`` cancel settles it ``cancelled`` (no retry, no dead letter),
        at once if it runs, when it would start if it waits here.
        """
        for run in list(self.runs.values()):
            if run.delivery.envelope.id == job_id and not run.done:
                return run.cancel(reason)
        return False
