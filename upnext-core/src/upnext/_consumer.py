"""A running worker: receive, execute, settle and heartbeat, group-committed.

At most one `receive`, one `settle` and one `extend` are in flight per
worker; whatever arrives meanwhile joins the next call. Jobs run as asyncio
tasks owned by the consumer; sync tasks run on a thread pool. How one job is
executed (decide, attempt, timeout, abandonment) is in `_execution.py`.

A job on its last chance (a *suspect*: it has lost `max_lost_runs` runs with
its workers, so one more dead-letters it) runs alone: it starts only once
this worker holds no other job, and nothing else is received or started
until its body ends, so that if it takes the worker down again only it is
charged the lost run (docs/semantics.md, "Lost runs").
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from upnext._backoff import Backoff
from upnext._client import Batcher, Client
from upnext._execution import ABANDON_AFTER, JobExecution, JobRun
from upnext._group_settle import GroupSettle
from upnext._hooks import call_hook
from upnext._receiving import receive_shielded
from upnext._settlement import Settlement
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
from upnext.errors import BrokerError, LeaseLost
from upnext.hooks import HookEvent

if TYPE_CHECKING:
    from upnext._task import Task
    from upnext._worker import Worker

__all__ = ["Consumer"]

log = logging.getLogger("upnext.worker")


class Consumer(JobExecution):
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
        backoff = Backoff(first=0.05, cap=5.0)
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
                deliveries = await receive_shielded(
                    self.broker, self.queues, limit=free, lease=self.lease, wait=wait
                )
            except Exception as exc:  # a backend bug must not wedge the worker either
                pause = next(backoff)
                log.warning(
                    "receive from %s failed: %s; retrying in %.2fs", self.client.name, exc, pause
                )
                await asyncio.sleep(pause)
                continue
            backoff.reset()
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
        self._dispatch()
        return bool(deliveries)

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
        if run.task is not None:
            run.task.cancel()
        else:  # still buffered: drop it, another worker may hold it now
            self.runs.pop(run.delivery, None)

    # -- settle --------------------------------------------------------------

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
        try:  # leased meanwhile (the heartbeat extends every run in `runs`)
            if settlement.result is not None:
                if self.client.same and isinstance(item, Ack):
                    item = Ack(item.delivery, settlement.result)
                elif self.client.same and isinstance(item, DeadLetter):
                    item = DeadLetter(item.delivery, item.record, settlement.result)
                else:
                    await self._write_result(settlement)
            outcome = await self.settler.submit(item)
        finally:
            self.runs.pop(run.delivery, None)
        if self.parked:
            self.turn.set()
        if isinstance(outcome, LeaseLost):
            log.warning("job %s: outcome discarded (%s)", run.delivery.envelope.id, outcome)
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

    # -- suspects ------------------------------------------------------------

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
            "job %s runs alone: one more lost run would dead-letter it", run.delivery.envelope.id
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
