"""Debounce (``options(debounce=s)``): a burst of submits of one key runs once, `s` seconds
after its last submit, with the last submit's arguments.

``upnext:debounce:<queue>:<key>`` holds the burst: its job's id, when it is due, the
last submit's (encoded) arguments, whether the job is enqueued yet and whether it has
started. A submit reads it:

- no burst, or one whose job has started: the caller writes a new burst, ``pending``
  (compare-and-set against what it read, a `PENDING_TTL` lifetime), enqueues its job
  delayed by `s`, then marks the burst enqueued. Of concurrent first submits exactly
  one writes it; the others join it. A producer killed between the two writes leaves a
  pending burst that lapses; its job, if it was enqueued, is skipped when due.
- a pending burst: the caller waits until it is marked (or lapses), like a unique claim;
- an enqueued burst whose job has not started: rewritten (compare-and-set) with a new
  due time and the new arguments; the caller gets a Future for that job, marked
  `duplicate`, and enqueues nothing.

The job, when it comes due (`run_debounced`, from the built-in `UniqueJobs`), reads its
burst: not due yet (or not marked yet), it is delayed (no attempt charged); due, it marks
the burst started (compare-and-set) and runs with the burst's arguments, which its
retries keep. A job that is not its burst's and never ran is skipped: nobody waits on it.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from upnext._backoff import Backoff
from upnext._envelopes import enqueue_bodies
from upnext._future import Future
from upnext._statekeys import debounce_key
from upnext._unique import HOLD, PENDING_TTL
from upnext.broker.state import STATE_VALUE_MAX, Expect, StateStore, StateWrite
from upnext.errors import BrokerError, ConfigurationError
from upnext.middleware._types import Decision, Delay, Skip

if TYPE_CHECKING:
    from upnext._serializer import JobBody
    from upnext._task import Task
    from upnext._worker import Worker
    from upnext.middleware._types import Job

__all__ = ["DEBOUNCE_HEADER", "run_debounced", "submit_debounced"]

R = TypeVar("R")

DEBOUNCE_HEADER: Final = "upnext-debounce"
"""The header naming a debounced job's key."""

_TRIES: Final = 500  # rounds (with growing pauses) before a burst that keeps changing is an error
_EARLY: Final = 0.002  # seconds early a due job may start (clock granularity)
_MARK_POLL: Final = 0.05  # a job due before its producer marked its burst checks again after this


class Burst(BaseModel):  # type: ignore[no-redef]  # a field named kwargs vs the mypy plugin
    """One debounced burst as stored: its job, due time (epoch s), last arguments, whether
    its job is enqueued and whether it started."""

    job: str
    due: float
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued: bool = False
    started: bool = False


def _read(value: bytes | None) -> Burst | None:
    if value is None:
        return None
    try:
        return Burst.model_validate_json(value)
    except ValidationError:
        return None


def _value(burst: Burst) -> bytes:
    data = burst.model_dump_json().encode()
    if len(data) > STATE_VALUE_MAX:
        raise ConfigurationError(
            f"debounce keeps the last arguments in shared state: at most {STATE_VALUE_MAX}"
            f" bytes, these take {len(data)}"
        )
    return data


async def submit_debounced(
    worker: Worker,
    task: Task[Any, R],
    body: JobBody,
    key: str,
    seconds: float,
    delay: float,
    priority: int,
) -> Future[R]:
    """Join `key`'s waiting burst with `body`'s arguments, or start a burst with `body`."""
    state = (await worker.client()).require_state("debounce")
    at = _At(debounce_key(body.queue, key), seconds + HOLD)
    body.headers = {**(body.headers or {}), DEBOUNCE_HEADER: key}
    pauses = Backoff(first=0.002, cap=0.1, jitter=1.0)  # writers that collided spread out
    for _ in range(_TRIES):
        [entry] = await state.state_get([at.key])
        burst = _read(entry.value if entry is not None else None)
        due = time.time() + seconds
        if entry is not None and burst is not None and not burst.started:
            if burst.enqueued:
                joined = burst.model_copy(
                    update={"due": due, "args": body.args, "kwargs": body.kwargs}
                )
                write = StateWrite(at.key, _value(joined), at.ttl, entry.version)
                if (await state.state_put([write]))[0]:
                    return Future(task, burst.job, body.queue, duplicate=True)
            await asyncio.sleep(next(pauses))  # lost a race, or the burst is being made
            continue
        mine = Burst(job=body.id, due=due, args=body.args, kwargs=body.kwargs)
        expect: Expect = "absent" if entry is None else entry.version
        pending = StateWrite(at.key, _value(mine), min(PENDING_TTL, at.ttl), expect)
        if (await state.state_put([pending]))[0]:
            if await _start(state, at, worker, task, body, mine, (delay, priority)):
                return Future(task, body.id, body.queue)
            _fresh_id(body, key)  # that job is enqueued, now an orphan: never reuse its id
        await asyncio.sleep(next(pauses))
    raise BrokerError(f"debounce of {key!r}: the burst kept changing ({_TRIES} tries)")


@dataclass(frozen=True, slots=True)
class _At:
    """Where a burst lives: its state key, and its lifetime once enqueued."""

    key: str
    ttl: float


async def _start(
    state: StateStore,
    at: _At,
    worker: Worker,
    task: Task[Any, Any],
    body: JobBody,
    burst: Burst,
    delay_priority: tuple[float, int],
) -> bool:
    """Enqueue the job of the pending `burst` this caller wrote, then mark it enqueued.

    False when the pending burst lapsed meanwhile and another took its place.
    """
    [entry] = await state.state_get([at.key])
    current = _read(entry.value) if entry is not None else None
    ours = current is not None and current.job == body.id
    try:
        await enqueue_bodies(worker, task, [body], [delay_priority[0]], [delay_priority[1]], None)
    except BaseException:
        if ours and entry is not None:  # free the key at once rather than after its lapse
            await asyncio.shield(state.state_put([StateWrite(at.key, None, expect=entry.version)]))
        raise
    if not ours or entry is None:
        return False
    marked = burst.model_copy(update={"enqueued": True})
    [ok] = await state.state_put([StateWrite(at.key, _value(marked), at.ttl, entry.version)])
    return ok


def _fresh_id(body: JobBody, key: str) -> None:
    """A new id for a body whose first id went to an orphaned job."""
    fresh = f"{key}:{os.urandom(6).hex()}"
    if body.root_id == body.id:
        body.root_id = fresh
    body.id = fresh


async def run_debounced(state: StateStore, job: Job, key: str) -> Decision | None:
    """Before a debounced job runs: delay it to its burst's due time, skip it if it is not the
    burst's, or mark the burst started and give the job the burst's last arguments."""
    task, body = job.task, job.body
    assert task is not None
    assert body is not None
    state_key = debounce_key(job.queue, key)
    pauses = Backoff(first=0.002, cap=0.1, jitter=1.0)
    for _ in range(_TRIES):
        [entry] = await state.state_get([state_key])
        burst = _read(entry.value if entry is not None else None)
        if entry is None or burst is None or burst.job != job.id:
            if body.attempts or body.lost:  # it ran before: it is the burst that ran
                return None
            return Skip("superseded by a later debounced submit")
        if not burst.enqueued:  # due before its producer marked it (a very short debounce)
            return Delay(_MARK_POLL)
        if burst.started:  # a redelivery: the broker's copy has the first arguments
            _take_arguments(job, burst)
            return None
        wait = burst.due - time.time()
        if wait > _EARLY:
            return Delay(wait)
        started = burst.model_copy(update={"started": True})
        ttl = task.timeout + HOLD
        [ok] = await state.state_put([StateWrite(state_key, _value(started), ttl, entry.version)])
        if ok:
            _take_arguments(job, burst)
            return None
        await asyncio.sleep(next(pauses))  # a submit rewrote the burst meanwhile: read again
    raise BrokerError(f"debounced job {job.id}: its burst kept changing ({_TRIES} tries)")


def _take_arguments(job: Job, burst: Burst) -> None:
    """Run `job` with the burst's arguments; its retries are encoded from its body, so keep them."""
    assert job.task is not None
    assert job.body is not None
    job.body.args, job.body.kwargs = burst.args, burst.kwargs
    job.args, job.kwargs = job.task.signature.decode(burst.args, burst.kwargs)
