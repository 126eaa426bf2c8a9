"""`CronScheduler`: fires each cron's ticks exactly once across a fleet of workers.

Every worker with crons runs one, beside its consumer. For each cron it
sleeps until the next tick, then reads the cron's cursor and latest run in one
call and, if a tick is due:

1. **claims** the due ticks: a compare-and-set of the cursor (on the version it
   read) that records them as ``pending``, with when and by whom. Of the
   schedulers that read the same cursor one wins; the others see a newer
   version next time and find nothing due;
2. **enqueues** them, each with the job id `tick_job_id(name, tick)`;
3. **confirms**: reads the cursor and, if its claim is still there, moves
   ``last_tick`` on and clears ``pending`` with a compare-and-set.

A worker killed between 1 and 3 leaves its claim behind: after `CLAIM_GRACE`
seconds a scheduler takes the claim over (compare-and-set again, so only one
does), re-enqueues the pending ticks with the same job ids (a
broker with ``dedupes_on_enqueue`` drops a copy the dead worker had already
enqueued; elsewhere that one tick may run twice) and confirms them. So no
claimed tick is lost, and in normal operation none is enqueued twice.

Which ticks fire: ticks that came due while this scheduler ran (and are at most
`LATE_LIMIT` old) all fire (without ``allow_overlap``, several found at once by
a late check fire as one, the latest); older ones were *missed* (no worker ran) and the
cron's `MissedRunPolicy` decides. While the previous run is queued or runs
(its mark: ``queued`` written by the claimer before it enqueues, ``running``
by `upnext._cronruns`, each with a TTL of the task's timeout + 60 s) a due tick
is skipped and logged, unless ``allow_overlap``. A disabled cron fires nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from upnext._cronruns import RUN_MARK_SLACK
from upnext._cronspec import TICK_HEADER, MissedRunPolicy
from upnext._cronstate import CronCursor, CronDef, CronRun, tick_job_id
from upnext._pipeline import before_enqueue
from upnext._serializer import encode_body
from upnext._statekeys import cron_key, cron_run_key
from upnext._task import CallOptions
from upnext.broker.protocol import Envelope
from upnext.broker.state import StateEntry, StateWrite
from upnext.middleware._base import overrides

if TYPE_CHECKING:
    from upnext._client import Client
    from upnext._worker import Worker

__all__ = ["CLAIM_GRACE", "LATE_LIMIT", "MAX_TICKS", "CronScheduler", "choose_ticks"]

log = logging.getLogger("upnext.cron")

CLAIM_GRACE: Final = 5.0
"""Seconds after which another scheduler takes over a claim that was never confirmed."""
LATE_LIMIT: Final = 60.0
"""A tick older than this is missed even if a scheduler ran (its store was unreachable)."""
MAX_TICKS: Final = 1000
"""At most this many ticks fire at once (the most recent ones)."""
STOP_WAIT: Final = 5.0  # seconds a stop waits for a check under way
RETRY_AFTER: Final = 1.0  # seconds before a cron whose check failed is checked again


def choose_ticks(cron: CronDef, due: list[float], now: float, alive_since: float) -> list[float]:
    """The `due` ticks that fire: late ones all (without overlap, the latest), missed ones
    as the policy says."""
    horizon = max(alive_since, now - LATE_LIMIT)
    missed = [tick for tick in due if tick <= horizon]
    late = due[len(missed) :]
    if not cron.allow_overlap:  # fired at once they would run at once: one run, the latest
        late = late[-1:]
    policy = cron.missed_run_policy
    if policy is MissedRunPolicy.SKIP:
        missed = []
    elif policy is MissedRunPolicy.LATEST_ONLY:
        missed = missed[-1:]
    elif cron.max_catch_up_seconds is not None:
        missed = [tick for tick in missed if tick >= now - cron.max_catch_up_seconds]
    return missed + late


class CronScheduler:
    """Fires the ticks of a worker's crons (see the module docstring)."""

    def __init__(self, worker: Worker, client: Client, crons: list[CronDef]) -> None:
        self.worker = worker
        self.client = client
        self.state = client.require_state("cron")
        self.crons = crons
        self.id = uuid.uuid4().hex
        self.alive_since = time.time()
        self.check_at = dict.fromkeys((cron.name for cron in crons), 0.0)
        self._failing: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Begin on the running event loop."""
        self.alive_since = time.time()
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="upnext-cron")

    async def stop(self) -> None:
        """Stop firing: a check under way ends first (within `STOP_WAIT`), leaving no claim."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait([task], timeout=STOP_WAIT)
        if not done:
            task.cancel()  # a claim left now is enqueued by another worker after CLAIM_GRACE
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            now = time.time()
            due = [cron for cron in self.crons if self.check_at[cron.name] <= now]
            await asyncio.gather(*(self._check_safely(cron) for cron in due))
            pause = min(max(min(self.check_at.values()) - time.time(), 0.0) + 0.002, 60.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):  # not wait_for: it can swallow a cancel
                    await self._stopping.wait()

    async def _check_safely(self, cron: CronDef) -> None:
        try:
            self.check_at[cron.name] = await self.check(cron)
        except Exception as exc:
            self.check_at[cron.name] = time.time() + RETRY_AFTER
            if cron.name not in self._failing:
                self._failing.add(cron.name)
                log.warning("cron %s: checking its ticks failed (%s); retrying", cron.name, exc)
        else:
            if cron.name in self._failing:
                self._failing.discard(cron.name)
                log.warning("cron %s: checking its ticks works again", cron.name)

    async def check(self, cron: CronDef) -> float:
        """Fire what is due of `cron`; when to check it next."""
        entry, run_entry = await self.state.state_get(
            [cron_key(cron.name), cron_run_key(cron.name)]
        )
        now = time.time()
        if entry is None:
            await self._register(cron, now)
            return cron.schedule.next_after(now)
        cursor = self._read(cron, entry).model_copy(  # the schedule deployed last is listed
            update={
                "schedule": cron.schedule.text,
                "every": cron.schedule.every,
                "timezone": cron.schedule.timezone,
            }
        )
        if cursor.pending:
            age = now - (cursor.pending_since or 0.0)
            if age < CLAIM_GRACE:
                return now + CLAIM_GRACE - age  # its claimer is enqueueing them
            log.warning(
                "cron %s: ticks %s were claimed %.1f s ago and never confirmed; enqueuing them",
                cron.name,
                [cron.schedule.moment(t).isoformat() for t in cursor.pending],
                age,
            )
            takeover = cursor.model_copy(update={"pending_since": now, "claimed_by": self.id})
            if await self._put(cron, takeover, entry.version):  # one scheduler takes it over
                await self._enqueue(cron, cursor.pending)
                await self._confirm_own(cron)
            return now
        if not cursor.enabled:
            return cron.schedule.next_after(now)
        due = cron.schedule.recent(now, cursor.last_tick, MAX_TICKS)
        if not due:
            return cron.schedule.next_after(max(now, cursor.last_tick or now))
        fire = choose_ticks(cron, due, now, self.alive_since)
        if fire and not cron.allow_overlap and (running := self._running(run_entry)):
            log.info(
                "cron %s: tick %s skipped: the run of tick %s (%s) is still running",
                cron.name,
                cron.schedule.moment(fire[-1]).isoformat(),
                cron.schedule.moment(running.scheduled_for).isoformat(),
                running.job_id,
            )
            fire = []
        handled = cursor.model_copy(update={"last_tick": due[-1]})
        if not fire:
            await self._put(cron, handled, entry.version)
            return cron.schedule.next_after(now)
        claim = cursor.model_copy(
            update={"pending": fire, "pending_since": now, "claimed_by": self.id}
        )
        if not await self._put(cron, claim, entry.version):
            return cron.schedule.next_after(now)  # another scheduler claimed them
        await self._mark_queued(cron, fire[-1], now)
        await self._enqueue(cron, fire)
        await self._confirm_own(cron)
        return cron.schedule.next_after(now)

    async def _register(self, cron: CronDef, now: float) -> None:
        """Write a new cron's cursor: the latest tick counts as handled (no past tick fires)."""
        latest = cron.schedule.recent(now, None, 1)
        cursor = CronCursor(
            schedule=cron.schedule.text,
            every=cron.schedule.every,
            timezone=cron.schedule.timezone,
            last_tick=latest[0] if latest else now,
        )
        await self.state.state_put(
            [StateWrite(cron_key(cron.name), cursor.model_dump_json().encode(), expect="absent")]
        )

    def _read(self, cron: CronDef, entry: StateEntry) -> CronCursor:
        try:
            return CronCursor.model_validate_json(entry.value)
        except ValidationError:
            log.warning("cron %s: its stored cursor is unreadable; starting it afresh", cron.name)
            return CronCursor(schedule=cron.schedule.text, last_tick=time.time())

    @staticmethod
    def _running(entry: StateEntry | None) -> CronRun | None:
        if entry is None:
            return None
        try:
            run = CronRun.model_validate_json(entry.value)
        except ValidationError:
            return None
        return run if run.status in ("queued", "running") else None

    async def _put(self, cron: CronDef, cursor: CronCursor, version: int) -> bool:
        data = cursor.model_dump_json().encode()
        [applied] = await self.state.state_put(
            [StateWrite(cron_key(cron.name), data, expect=version)]
        )
        return applied

    async def _confirm(self, cron: CronDef, claimed: CronCursor, version: int) -> None:
        """Move the cursor past `claimed`'s pending ticks (if nothing changed it since)."""
        done = claimed.model_copy(
            update={
                "last_tick": max([*claimed.pending, claimed.last_tick or 0.0]),
                "pending": [],
                "pending_since": None,
                "claimed_by": None,
            }
        )
        await self._put(cron, done, version)

    async def _confirm_own(self, cron: CronDef) -> None:
        """Confirm this scheduler's claim, unless another one took it over meanwhile."""
        [entry] = await self.state.state_get([cron_key(cron.name)])
        if entry is None:
            return
        cursor = self._read(cron, entry)
        if cursor.claimed_by != self.id or not cursor.pending:
            log.warning("cron %s: its claim was taken over before it was confirmed", cron.name)
            return
        await self._confirm(cron, cursor, entry.version)

    async def _mark_queued(self, cron: CronDef, tick: float, now: float) -> None:
        """Record the tick's run as ``queued`` before it is enqueued (its start and end
        replace the mark), so the next tick sees it in progress from the start."""
        run = CronRun(
            job_id=tick_job_id(cron.name, tick), scheduled_for=tick, status="queued", started_at=now
        )
        ttl = cron.task.timeout + RUN_MARK_SLACK
        await self.state.state_put(
            [StateWrite(cron_run_key(cron.name), run.model_dump_json().encode(), ttl)]
        )

    async def _enqueue(self, cron: CronDef, ticks: list[float]) -> None:
        """Enqueue one job per tick, its id derived from the tick, the tick in its headers.

        The jobs pass the worker's `before_enqueue` middleware like any submit
        (one that dedupes a tick drops it); then the tick header is added.
        """
        task, worker = cron.task, self.worker
        options = [CallOptions(job_id=tick_job_id(cron.name, tick)) for tick in ticks]
        bodies = [task.build_body((), {}, option) for option in options]
        delays, priorities = [0.0] * len(bodies), [0] * len(bodies)
        stage = [m for m in worker.middleware if overrides(m, "before_enqueue")]
        if stage:
            submissions = await before_enqueue(stage, task, bodies, 0.0, 0)
            kept = [i for i, s in enumerate(submissions) if s.dedupe_to is None]
            bodies, ticks = [bodies[i] for i in kept], [ticks[i] for i in kept]
            delays = [submissions[i].delay for i in kept]
            priorities = [submissions[i].priority for i in kept]
        envelopes = []
        for body, tick, delay, priority in zip(bodies, ticks, delays, priorities, strict=True):
            body.headers = {
                **(body.headers or {}),
                TICK_HEADER: cron.schedule.moment(tick).isoformat(),
            }
            data = encode_body(body, worker.max_payload)
            envelopes.append(Envelope(body.id, body.queue, data, delay, priority))
        if envelopes:
            await self.client.broker.enqueue_many(envelopes)
