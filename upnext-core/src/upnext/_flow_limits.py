"""`FlowLimits`: a task's `max_concurrency` and `rate_limit` across every worker (a built-in).

Both are slots in the shared `StateStore` (`slots_acquire`), taken in
`before_run`, after the decisions of unique and debounced jobs:

- **Concurrency**: a slot of ``upnext:concurrency:<task>[:<key>]`` whose
  member is the job id, TTL the worker's lease, kept alive by the worker tick
  (`Worker.held_slots`) while the body runs and given back when it ends. A
  crashed worker's slots lapse with their TTL; the job itself, run again,
  takes its own slot back at once (same member).
- **Rate**: a slot of ``upnext:rate:<task>[:<key>]`` per start, a fresh member
  each time, TTL the window: at most `count` live members means at most
  `count` starts in any window of that length (a sliding log, judged by the
  store's clock), never twice the rate across a window's edge.

A job refused a slot is delayed (`Delay`): no attempt is charged, nothing is
dropped. Rate: until the window's oldest start leaves it, plus up to a second
(or a window, if shorter) of jitter so refused jobs do not all come back at
once. Concurrency: 0.25 to 1 s, then it asks again. Each ask is one state call
and, when refused, one settle: docs/flow-control.md gives the cost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from typing import TYPE_CHECKING, Any, Final

from upnext._statekeys import concurrency_slots_key, rate_slots_key
from upnext.broker.state import SlotClaim, StateStore
from upnext.middleware._base import CallNext, Middleware
from upnext.middleware._types import Decision, Delay

if TYPE_CHECKING:
    from upnext._settlement import Settlement
    from upnext._task import Task
    from upnext._worker import Worker
    from upnext.middleware._types import Job

__all__ = ["BUSY_DELAY", "FlowLimits"]

log = logging.getLogger("upnext.worker")

BUSY_DELAY: Final = (0.25, 1.0)
"""Seconds (from, to) a job waits, drawn at random, when its concurrency limit is full."""
_RATE_JITTER: Final = 1.0  # seconds at most added to a rate refusal's wait (or the window)
_HELD: Final = "upnext.concurrency_slot"  # Job.state: the concurrency slot this run holds


class FlowLimits(Middleware):
    """Delays a job until its task's concurrency and rate limits let it start."""

    # A slot the body never used (a later before_run decided) is given back right
    # after the settle, in the job's own task: one state call, bounded.
    settles_inline = True

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def applies_to(self, task: Task[Any, Any] | None) -> bool:
        """Only tasks with a limit: others never meet this middleware."""
        return task is not None and task.limits is not None

    async def before_run(self, job: Job) -> Decision | None:
        """Take a concurrency slot, then a rate slot; delay the job if either is full."""
        task = job.task
        if task is None or (limits := task.limits) is None:
            return None
        args, kwargs = job.args or [], job.kwargs or {}
        state = (await self.worker.client()).require_state("flow limits")
        if limits.max_concurrency is not None:
            key = concurrency_slots_key(limits.concurrency_of(task, args, kwargs))
            claim = SlotClaim(key, job.id, limits.max_concurrency, self.worker.lease)
            grant = await state.slots_acquire(
                key, job.id, limit=limits.max_concurrency, ttl=self.worker.lease
            )
            if not grant.acquired:
                return Delay(random.uniform(*BUSY_DELAY))
            self.worker.held_slots.hold(claim)
            job.state[_HELD] = claim
        if limits.rate is not None:
            count, window = limits.rate
            key = rate_slots_key(limits.rate_of(task, args, kwargs))
            grant = await state.slots_acquire(key, uuid.uuid4().hex, limit=count, ttl=window)
            if not grant.acquired:
                await self._release(job, state)
                jitter = random.uniform(0.0, min(window, _RATE_JITTER))
                return Delay(min(grant.retry_after, window) + jitter)
        return None

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Run the body; give its concurrency slot back as soon as it ends."""
        try:
            return await call_next()
        finally:
            if _HELD in job.state:
                await self._release(job, None)

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        """Give back a slot still held: the body never ran (a later decision settled it)."""
        if _HELD in job.state:
            await self._release(job, None)

    async def _release(self, job: Job, state: StateStore | None) -> None:
        """Give back the concurrency slot `job` holds, if any (a failure: it lapses at its TTL)."""
        claim: SlotClaim | None = job.state.pop(_HELD, None)
        if claim is None:
            return
        self.worker.held_slots.drop(claim.key, claim.member)
        try:
            if state is None:
                state = (await self.worker.client()).require_state("flow limits")
            async with asyncio.timeout(self.worker.hook_timeout):
                await state.slots_release(claim.key, [claim.member])
        except Exception as exc:
            log.warning(
                "job %s: giving back its concurrency slot %s failed (%s); it lapses in %.0f s",
                job.id,
                claim.key,
                exc,
                claim.ttl,
            )
