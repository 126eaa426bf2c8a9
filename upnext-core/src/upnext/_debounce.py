"""Debounce (``options(debounce=s)``): a burst of submits of one key runs once, `s` seconds
after its last submit, with the last submit's arguments.

``upnext:debounce:<queue>:<key>`` holds the burst: its job's id, when it is due, the
last submit's (encoded) arguments, and whether the job has started. A submit reads it:

- a burst whose job has not started is rewritten (compare-and-set on the version read)
  with a new due time and the new arguments; the caller gets a Future for that job,
  marked `duplicate`, and enqueues nothing;
- otherwise the caller enqueues a new job delayed by `s`, then records it as the burst
  (compare-and-set against what it read); losing that race, it joins the burst that won.

The job, when it comes due (`run_debounced`, from the built-in `UniqueJobs`), reads its
burst: not due yet, it is delayed to the latest due time (no attempt charged); due, it
marks the burst started (compare-and-set) and runs with the burst's arguments, which its
retries keep. A job that is not the burst's and never ran (it lost a race, or its
producer died before recording it) is skipped: nobody waits on it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from upnext._envelopes import enqueue_bodies
from upnext._future import Future
from upnext._statekeys import debounce_key
from upnext._unique import HOLD
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

_TRIES: Final = 50  # compare-and-set rounds before a burst that keeps changing is an error
_EARLY: Final = 0.002  # seconds early a due job may start (clock granularity)
# A job may come due before its producer has recorded it as the burst (a debounce shorter
# than a state round trip): for this long after its submit, a job with no burst waits.
_RECORD_GRACE: Final = 5.0
_RECORD_POLL: Final = 0.05


class Burst(BaseModel):  # type: ignore[no-redef]  # a field named kwargs vs the mypy plugin
    """One debounced burst as stored: its job, due time (epoch s), last arguments, started."""

    job: str
    due: float
    args: list[Any]
    kwargs: dict[str, Any]
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
    state_key, ttl = debounce_key(body.queue, key), seconds + HOLD
    body.headers = {**(body.headers or {}), DEBOUNCE_HEADER: key}
    enqueued = False
    for _ in range(_TRIES):
        [entry] = await state.state_get([state_key])
        burst = _read(entry.value if entry is not None else None)
        due = time.time() + seconds
        if entry is not None and burst is not None and not burst.started:
            joined = burst.model_copy(update={"due": due, "args": body.args, "kwargs": body.kwargs})
            [ok] = await state.state_put(
                [StateWrite(state_key, _value(joined), ttl, entry.version)]
            )
            if ok:
                return Future(task, burst.job, body.queue, duplicate=True)
            continue
        mine = Burst(job=body.id, due=due, args=body.args, kwargs=body.kwargs)
        value = _value(mine)  # too large: refused before anything is enqueued
        if not enqueued:
            await enqueue_bodies(worker, task, [body], [delay], [priority], None)
            enqueued = True
        expect: Expect = "absent" if entry is None else entry.version
        [ok] = await state.state_put([StateWrite(state_key, value, ttl, expect)])
        if ok:
            return Future(task, body.id, body.queue)
    raise BrokerError(f"debounce of {key!r}: the burst kept changing ({_TRIES} tries)")


async def run_debounced(state: StateStore, job: Job, key: str) -> Decision | None:
    """Before a debounced job runs: delay it to its burst's due time, skip it if it is not the
    burst's, or mark the burst started and give the job the burst's last arguments."""
    task, body = job.task, job.body
    assert task is not None
    assert body is not None
    state_key = debounce_key(job.queue, key)
    for _ in range(_TRIES):
        [entry] = await state.state_get([state_key])
        burst = _read(entry.value if entry is not None else None)
        if entry is None or burst is None or burst.job != job.id:
            if body.attempts or body.lost:  # it ran before: it is the burst that ran
                return None
            if entry is None and time.time() - body.enqueued_at < _RECORD_GRACE:
                return Delay(_RECORD_POLL)
            return Skip("superseded by a later debounced submit")
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
    raise BrokerError(f"debounced job {job.id}: its burst kept changing ({_TRIES} tries)")


def _take_arguments(job: Job, burst: Burst) -> None:
    """Run `job` with the burst's arguments; its retries are encoded from its body, so keep them."""
    assert job.task is not None
    assert job.body is not None
    job.body.args, job.body.kwargs = burst.args, burst.kwargs
    job.args, job.kwargs = job.task.signature.decode(burst.args, burst.kwargs)
