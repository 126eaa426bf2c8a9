"""`UniqueJobs`: the worker's side of unique and debounced jobs (a built-in middleware).

A unique job (header `UNIQUE_HEADER`) renews its key's claim when an attempt
starts, for the task's timeout plus `HOLD`, and at its final settle cuts the
claim to what its result has left (deletes it for none): the key is free
again when the result expires, never later. A debounced job (header `DEBOUNCE_HEADER`) is delayed,
skipped or given its burst's last arguments before it runs
(`upnext._debounce`). Jobs without headers never reach it (`headers_only`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from upnext._debounce import DEBOUNCE_HEADER, run_debounced
from upnext._serializer import ResultRecord
from upnext._statekeys import unique_key
from upnext._unique import HOLD, UNIQUE_HEADER, claim_value, cut_claim
from upnext.broker.protocol import ResultWrite
from upnext.broker.state import StateStore, StateWrite
from upnext.middleware._base import Middleware

if TYPE_CHECKING:
    from upnext._settlement import Settlement
    from upnext._worker import Worker
    from upnext.middleware._types import Decision, Job

__all__ = ["UniqueJobs"]

_FINAL: Final = frozenset({"complete", "failed", "cancelled"})


class UniqueJobs(Middleware):
    """Keeps unique jobs' claims for their life and result, and runs debounced bursts once."""

    # Its after_settle awaits one state write, bounded by the worker's hook_timeout, and
    # only for unique jobs: inline, so a settled job's key is never left held by a
    # background task that a stopping worker drops.
    settles_inline = True
    headers_only = True  # unique and debounced jobs carry their header: others skip it

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def _state(self) -> StateStore | None:
        return (await self.worker.client()).state

    async def before_run(self, job: Job) -> Decision | None:
        """Renew a unique job's claim; delay, skip or prepare a debounced one."""
        headers = job.body.headers if job.body is not None else None
        if not headers or (state := await self._state()) is None:
            return None
        if (key := headers.get(DEBOUNCE_HEADER)) is not None:
            return await run_debounced(state, job, key)
        if (key := headers.get(UNIQUE_HEADER)) is not None and job.task is not None:
            ttl = job.task.timeout + HOLD
            await state.state_put([StateWrite(unique_key(job.queue, key), _held(job), ttl)])
        return None

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        """At a unique job's final settle, keep its key only as long as its result."""
        body = job.body
        key = body.headers.get(UNIQUE_HEADER) if body is not None and body.headers else None
        if key is None or body is None or settlement.status not in _FINAL:
            return
        if (state := await self._state()) is None:
            return
        async with asyncio.timeout(self.worker.hook_timeout):
            await cut_claim(state, job.queue, key, job.id, _result_left(settlement.result))


def _result_left(result: ResultWrite | None) -> float:
    """Seconds the settled result has left at most: its TTL runs from its write, which came
    after its completion time, so a claim given this never outlives the result it answers."""
    if result is None:
        return 0.0
    try:
        finished = ResultRecord.model_validate_json(result.data).ct
    except ValidationError:
        finished = None
    return result.ttl - max(0.0, time.time() - finished) if finished is not None else result.ttl


def _held(job: Job) -> bytes:
    return claim_value(job.id, True)
