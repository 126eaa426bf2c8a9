"""The worker tick: a once-a-second pulse through the shared state store.

Separate from lease extension (every lease/3, and only where leases are
timed), each tick makes at most three calls, at once, whatever the number of
jobs or slots:

1. one registry write: this worker's `WorkerInfo` under ``upnext:worker:<id>``
   with a TTL of `REGISTRY_TICKS` ticks, so a dead worker's entry lapses (with
   metrics on, its `MetricsSnapshot` under ``upnext:metrics:<id>``, and the
   recent-jobs history's segments the jobs finished since the last tick went
   to, `upnext._history`, in the same call);
2. one read of the cancel markers of the jobs it runs (``upnext:cancel:<job>``),
   calling `on_cancel(job_id)` once per marked job, and, in the same call, of
   the pause markers of the queues it consumes (``upnext:paused:<queue>``),
   calling `on_paused(queues)` with the paused ones after every read (with
   `on_paused` given, this read is made every tick, jobs or not);
3. one refresh of the slots it holds (`HeldSlots`), re-acquiring each so it
   outlives its TTL while its holder runs.

So the store sees one round trip per step per worker per tick. A tick is
bounded by its interval: a store that hangs costs one missed beat, never a
blocked worker; a tick that fails is logged once per outage and the next one
tries again. The consumer starts it with `start()` and stops it with `stop()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from upnext._durations import check_duration
from upnext._statekeys import REGISTRY_TICKS, cancel_key, metrics_key, paused_key, worker_key
from upnext.broker.state import STATE_VALUE_MAX, SlotClaim, StateStore, StateWrite
from upnext.errors import ConfigurationError
from upnext.workers import QueueCounts, RunningJob, WorkerInfo

if TYPE_CHECKING:
    from upnext._consumer import Consumer

__all__ = ["HeldSlots", "WorkerTick", "consumer_tick", "encode_registry_entry"]

log = logging.getLogger("upnext.worker")

_SlotId = tuple[str | None, str, str]  # scope, key, member


class HeldSlots:
    """The slots a worker holds, which its tick keeps alive.

    Middleware that acquired a slot records it with `hold`; when done it calls
    `drop` first, then `slots_release` on the store. A tick refresh that raced
    with the release is undone by the tick itself (it releases what it
    re-acquired for a slot no longer held).
    """

    def __init__(self) -> None:
        self._held: dict[_SlotId, SlotClaim] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, claim: SlotClaim) -> None:
        """Keep `claim`'s slot alive from the next tick on."""
        self._held[(claim.scope, claim.key, claim.member)] = claim

    def drop(self, key: str, member: str, *, scope: str | None = None) -> None:
        """Stop refreshing a slot (its holder releases it)."""
        self._held.pop((scope, key, member), None)

    def holds(self, claim: SlotClaim) -> bool:
        """Whether `claim`'s slot is still held."""
        return (claim.scope, claim.key, claim.member) in self._held

    def claims(self) -> list[SlotClaim]:
        """Every held slot, as the claims that refresh them."""
        return list(self._held.values())


def encode_registry_entry(info: WorkerInfo) -> bytes:
    """`info` as JSON of at most `STATE_VALUE_MAX` bytes, its `running` list cut to fit."""
    data = info.model_dump_json().encode()
    while len(data) > STATE_VALUE_MAX and info.running:
        keep = min(len(info.running) - 1, len(info.running) * STATE_VALUE_MAX // len(data))
        info = info.model_copy(update={"running": info.running[: max(keep, 0)]})
        data = info.model_dump_json().encode()
    return data


class WorkerTick:
    """Writes the registry, reads cancel markers and refreshes held slots, once an interval.

    `running()` gives the jobs this worker runs now; `on_cancel(job_id)` is
    called (on the event loop) for a running job whose cancel marker is set;
    `on_paused(queues)`, if given, with the paused ones of `queues` after each
    read that succeeded, and with None after one that failed or timed out;
    `finished()`, if given, the jobs it finished per queue so far.
    """

    def __init__(
        self,
        state: StateStore,
        *,
        worker_id: str,
        name: str,
        queues: Sequence[str],
        concurrency: int,
        running: Callable[[], list[RunningJob]],
        on_cancel: Callable[[str], object],
        on_paused: Callable[[frozenset[str] | None], object] | None = None,
        slots: HeldSlots | None = None,
        metrics: Callable[[str], bytes] | None = None,
        history: Callable[[str], list[StateWrite]] | None = None,
        finished: Callable[[], dict[str, QueueCounts]] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.interval = check_duration("tick interval", interval, positive=True)
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        self.state = state
        self.key = worker_key(worker_id)
        self.worker_id = worker_id
        # The job metrics snapshot (given the worker id), written beside the registry entry.
        self.metrics = metrics
        # The history segments to write (given the worker id): new entries only, or none.
        self.history = history
        self.identity = {
            "worker_id": worker_id,
            "name": name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(queues),
            "concurrency": concurrency,
            "started_at": time.time(),
        }
        self.running = running
        self.finished = finished
        self.on_cancel = on_cancel
        self.on_paused = on_paused
        self.queues = list(queues)
        self.slots = slots if slots is not None else HeldSlots()
        self._signalled: set[str] = set()  # running jobs already told to cancel
        self._lost: set[_SlotId] = set()  # held slots a refresh could not keep
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin ticking on the running event loop; the first tick is at once."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="upnext-tick")

    async def stop(self, *, deregister: bool = True) -> None:
        """Stop ticking and (unless `deregister=False`) delete the registry entry at once.

        The jobs finished since the last tick go to the history in the same call.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if deregister:
            try:
                async with asyncio.timeout(self.interval):
                    deletes = self.history(self.worker_id) if self.history is not None else []
                    deletes.append(StateWrite(self.key, None))
                    if self.metrics is not None:
                        deletes.append(StateWrite(metrics_key(self.worker_id), None))
                    await self.state.state_put(deletes)
            except Exception as exc:
                log.warning("could not remove worker %s from the registry: %s", self.key, exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                # Not wait_for: on 3.11 it can swallow a cancel that arrives as
                # the tick ends, and `stop()` would then wait for ever.
                async with asyncio.timeout(self.interval):
                    await self.tick()
            except Exception as exc:  # the store is down or slow: try again next tick
                self._failed(exc)
            else:
                self._recovered()
            due = max(due + self.interval, loop.time())
            await asyncio.sleep(due - loop.time())

    async def tick(self) -> None:
        """One tick: its (up to three) calls at once; raises the first that failed."""
        jobs = self.running()
        steps = [self._beat(jobs)]
        if jobs or self.on_paused is not None:
            steps.append(self._read(jobs))
        if claims := self.slots.claims():
            steps.append(self._refresh(claims))
        outcomes = await asyncio.gather(*steps, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _beat(self, jobs: list[RunningJob]) -> None:
        info = WorkerInfo.model_validate(
            {
                **self.identity,
                "beat_at": time.time(),
                "running_count": len(jobs),
                "running": jobs,
                "finished": self.finished() if self.finished is not None else {},
            }
        )
        ttl = REGISTRY_TICKS * self.interval
        writes = [StateWrite(self.key, encode_registry_entry(info), ttl)]
        if self.metrics is not None:  # same call: no extra round trip per tick
            writes.append(
                StateWrite(metrics_key(self.worker_id), self.metrics(self.worker_id), ttl)
            )
        if self.history is not None:
            writes.extend(self.history(self.worker_id))
        await self.state.state_put(writes)

    async def _read(self, jobs: list[RunningJob]) -> None:
        """The cancel markers of `jobs` and (with `on_paused`) the queues' pause markers."""
        ids = [job.job_id for job in jobs]
        keys = [cancel_key(job_id) for job_id in ids]
        if self.on_paused is not None:
            keys.extend(paused_key(queue) for queue in self.queues)
        try:
            markers = await self.state.state_get(keys)
        except BaseException:
            if self.on_paused is not None:
                self.on_paused(None)  # unread: a starting worker goes on as if none were
            raise
        if self.on_paused is not None:
            pauses = markers[len(ids) :]
            paused = {q for q, mark in zip(self.queues, pauses, strict=True) if mark is not None}
            try:
                self.on_paused(frozenset(paused))
            except Exception:
                log.exception("applying the paused queues %s failed", sorted(paused))
        self._signalled &= set(ids)  # forget jobs that ended
        for job_id, marker in zip(ids, markers[: len(ids)], strict=True):
            if marker is None or job_id in self._signalled:
                continue
            self._signalled.add(job_id)
            try:
                self.on_cancel(job_id)
            except Exception:
                log.exception("cancelling job %s failed", job_id)

    async def _refresh(self, claims: list[SlotClaim]) -> None:
        grants = await self.state.slots_acquire_many(claims)
        stale: dict[tuple[str | None, str], list[str]] = {}
        for claim, grant in zip(claims, grants, strict=True):
            slot = (claim.scope, claim.key, claim.member)
            if grant.acquired and not self.slots.holds(claim):
                # Released while this refresh was in flight: give it back again.
                stale.setdefault((claim.scope, claim.key), []).append(claim.member)
            elif not grant.acquired and slot not in self._lost:
                self._lost.add(slot)
                log.warning(
                    "slot %s of %s lapsed and was taken (%d held): it is no longer held here",
                    claim.member,
                    claim.key,
                    grant.count,
                )
            elif grant.acquired:
                self._lost.discard(slot)
        await asyncio.gather(
            *(
                self.state.slots_release(key, members, scope=scope)
                for (scope, key), members in stale.items()
            )
        )

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures == 1:
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc}"
            log.warning(
                "worker tick %s (registry, cancel and pause markers, slots not refreshed); "
                "retrying every %.3g s, quietly until it succeeds",
                what,
                self.interval,
            )

    def _recovered(self) -> None:
        if self._failures:
            log.warning("worker tick succeeded again after %d failed ticks", self._failures)
            self._failures = 0


def consumer_tick(consumer: Consumer, state: StateStore) -> WorkerTick:
    """The tick of a running worker, its reports and callbacks wired to `consumer`."""
    worker = consumer.worker
    return WorkerTick(
        state,
        worker_id=consumer.worker_id,
        name=worker.name,
        queues=consumer.queues,
        concurrency=consumer.capacity,
        running=consumer.running_jobs,
        on_cancel=consumer.cancel_job,
        on_paused=consumer.gate.update,
        slots=worker.held_slots,
        metrics=worker.metrics.encoded if worker.metrics is not None else None,
        history=consumer.history.writes if consumer.history is not None else None,
        finished=consumer.finished.snapshot,
    )
