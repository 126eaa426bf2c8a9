"""`FlowLimits`: a task's `max_concurrency` and `rate_limit` across every worker (a built-in).

Both are slots in the shared `StateStore` (`slots_acquire`), taken in
`before_run`, after the decisions of unique and debounced jobs:

- **Concurrency**: a slot of ``upnext:concurrency:<task>[:<key>]`` whose
  member is the job id, its TTL the worker's lease (at least `MIN_SLOT_TTL`),
  kept alive by the worker tick (`Worker.held_slots`) while the job runs and
  given back when its body ends (`after_run`, outside the task's timeout). A
  job that never reaches its body (a later decision, a cancel, a lost lease)
  gives it back when its run ends (`JobExecutor.execute`, through
  `JobRun.limit_slot`). A crashed worker's slots lapse with their TTL; the job
  itself, run again, takes its own slot back at once (same member).
- **Rate**: a slot of ``upnext:rate:<task>[:<key>]`` per start, a fresh member
  each time, TTL the window: at most `count` live members means at most
  `count` starts in any window of that length (a sliding log, judged by the
  store's clock), never twice the rate across a window's edge.

A job refused a slot is delayed (`Delay`): no attempt is charged, nothing is
dropped. Rate: until the window's oldest start leaves it, plus up to a second
(or a window, if shorter) of jitter so refused jobs do not all come back at
once. Concurrency: 0.25 to 1 s, then it asks again. A store that fails or
hangs (`hook_timeout`) delays the job too (`OUTAGE_DELAY`): a limit that
cannot be checked is not a failed attempt. docs/flow-control.md gives the cost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from typing import TYPE_CHECKING, Any, Final

from upnext._statekeys import concurrency_slots_key, rate_slots_key
from upnext.broker.state import SlotClaim, StateStore
from upnext.middleware._base import Middleware
from upnext.middleware._types import Decision, Delay

if TYPE_CHECKING:
    from upnext._jobrun import JobRun
    from upnext._task import Task
    from upnext._worker import Worker
    from upnext.middleware._types import Job, Outcome

__all__ = ["BUSY_DELAY", "MIN_SLOT_TTL", "OUTAGE_DELAY", "FlowLimits"]

log = logging.getLogger("upnext.worker")

BUSY_DELAY: Final = (0.25, 1.0)
"""Seconds (from, to) a job waits, drawn at random, when its concurrency limit is full."""
OUTAGE_DELAY: Final = (1.0, 2.0)
"""Seconds (from, to) a job waits when the state store could not be asked."""
MIN_SLOT_TTL: Final = 5.0
"""A concurrency slot's TTL at least: five ticks, however short the lease."""
_RATE_JITTER: Final = 1.0  # seconds at most added to a rate refusal's wait (or the window)


class FlowLimits(Middleware):
    """Delays a job until its task's concurrency and rate limits let it start."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._failing = False  # the store failed: logged once per outage

    def applies_to(self, task: Task[Any, Any] | None) -> bool:
        """Only tasks with a limit: others never meet this middleware."""
        return task is not None and task.limits is not None

    async def before_run(self, job: Job) -> Decision | None:
        """Take a concurrency slot, then a rate slot; delay the job if either is full."""
        task = job.task
        if task is None or (limits := task.limits) is None:
            return None
        args, kwargs = job.args or [], job.kwargs or {}
        # Keys first: a key function that fails is the attempt's error (one line).
        held = None
        if limits.max_concurrency is not None:
            key = concurrency_slots_key(limits.concurrency_of(task, args, kwargs))
            ttl = max(self.worker.lease, MIN_SLOT_TTL)
            held = SlotClaim(key, job.id, limits.max_concurrency, ttl)
        rate = None
        if limits.rate is not None:
            rate = (rate_slots_key(limits.rate_of(task, args, kwargs)), *limits.rate)
        run: JobRun = job._run
        state = (await self.worker.client()).require_state("flow limits")
        try:
            async with asyncio.timeout(self.worker.hook_timeout):
                if held is not None:
                    run.limit_slot = held  # before the await: a cancel meanwhile still frees it
                    grant = await state.slots_acquire(
                        held.key, held.member, limit=held.limit, ttl=held.ttl
                    )
                    if not grant.acquired:
                        run.limit_slot = None
                        return Delay(random.uniform(*BUSY_DELAY))
                    self.worker.held_slots.hold(held)
                if rate is not None:
                    key, count, window = rate
                    grant = await state.slots_acquire(
                        key, uuid.uuid4().hex, limit=count, ttl=window
                    )
                    if not grant.acquired:
                        await self.release(run, state)
                        jitter = random.uniform(0.0, min(window, _RATE_JITTER))
                        return Delay(min(grant.retry_after, window) + jitter)
        except Exception as exc:  # the store failed or hung: ask again later, uncharged
            self._outage(job, exc)
            await self.release(run, state)
            return Delay(random.uniform(*OUTAGE_DELAY))
        if self._failing:
            self._failing = False
            log.warning("flow limits: the state store answers again")
        return None

    async def after_run(self, job: Job, outcome: Outcome) -> None:
        """The body ended: give its concurrency slot back (outside its timeout)."""
        if job._run.limit_slot is not None:
            await self.release(job._run, None)

    async def release(self, run: JobRun, state: StateStore | None) -> None:
        """Give back the concurrency slot `run` holds, if any (a failure: it lapses at its TTL)."""
        claim = run.limit_slot
        if claim is None:
            return
        run.limit_slot = None
        self.worker.held_slots.drop(claim.key, claim.member)
        try:
            if state is None:
                state = (await self.worker.client()).require_state("flow limits")
            async with asyncio.timeout(self.worker.hook_timeout):
                await state.slots_release(claim.key, [claim.member])
        except Exception as exc:
            log.warning(
                "job %s: giving back its concurrency slot %s failed (%s); it lapses in %.0f s",
                run.delivery.envelope.id,
                claim.key,
                exc,
                claim.ttl,
            )

    def _outage(self, job: Job, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "flow limits: the state store failed (%r); job %s and others wait and ask again",
                exc,
                job.id,
            )
