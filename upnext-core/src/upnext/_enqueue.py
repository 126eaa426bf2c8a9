"""Submitting calls of a task: bodies, `before_enqueue`, unique keys, the enqueue itself.

A call with a unique key (a chosen `job_id`, an idempotency key, a task's
`unique_key`) is claimed in the state store first (`upnext._unique`), or
debounced (`upnext._debounce`); the calls that lost their claim get a
Future for the job holding the key and are not enqueued.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from upnext._calloptions import CallOptions
from upnext._debounce import submit_debounced
from upnext._envelopes import enqueue_bodies
from upnext._future import Future
from upnext._pipeline import before_enqueue
from upnext._serializer import JobBody
from upnext._unique import UNIQUE_HEADER, Claim, confirm, release, take
from upnext.broker.state import StateStore
from upnext.errors import BrokerError, ConfigurationError

if TYPE_CHECKING:
    from upnext._task import Task
    from upnext._worker import Worker

__all__ = ["submit_calls"]

R = TypeVar("R")

log = logging.getLogger("upnext")


@dataclass(slots=True)
class _Batch(Generic[R]):
    """The calls of one submit on their way: bodies, unique keys, and per call what the
    caller gets and what is enqueued (`kept` indexes the calls still to enqueue)."""

    bodies: list[JobBody]
    keys: list[str | None]
    futures: list[Future[R]]
    delays: list[float]
    priorities: list[int]
    kept: list[int]


async def submit_calls(
    worker: Worker,
    task: Task[Any, R],
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    options: CallOptions,
) -> list[Future[R]]:
    """Validate, encode and enqueue calls of `task` in one round trip (per unique claim, two)."""
    _check(calls, options)
    batch = _build(task, calls, options)
    if worker.enqueue_stage:
        await _before_enqueue(worker, task, batch, options)
    if options.debounce is not None and batch.kept:
        [i] = batch.kept
        key = batch.keys[i]
        assert key is not None  # checked by options()
        debounced = await submit_debounced(
            worker,
            task,
            batch.bodies[i],
            key,
            options.debounce,
            batch.delays[i],
            batch.priorities[i],
        )
        return [debounced]
    state, won = await _claim(worker, task, batch, options)
    if not batch.kept:
        return batch.futures
    try:
        await enqueue_bodies(
            worker,
            task,
            [batch.bodies[i] for i in batch.kept],
            [batch.delays[i] for i in batch.kept],
            [batch.priorities[i] for i in batch.kept],
            options.connection,
        )
    except BaseException:
        if state is not None and won:
            await asyncio.shield(release(state, won))
        raise
    if state is not None and won:
        await _confirm(state, won)
    return batch.futures


def _check(calls: Sequence[object], options: CallOptions) -> None:
    if options.job_id is not None and len(calls) > 1:
        raise ConfigurationError("a fixed job_id applies to a single submit")
    if (options.unique_for is not None or options.debounce is not None) and len(calls) > 1:
        raise ConfigurationError("unique_for and debounce apply to a single submit")
    if options.connection is not None and (options.unique_for or options.debounce):
        raise ConfigurationError("unique_for and debounce cannot enqueue in your transaction")


def _build(
    task: Task[Any, R],
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    options: CallOptions,
) -> _Batch[R]:
    """Each call's body (named after its unique key, if any) and Future."""
    bodies = [task.build_body(args, kwargs, options) for args, kwargs in calls]
    keys = [task.key_of(args, kwargs, options) for args, kwargs in calls]
    # A throttled or debounced key names a series of jobs, one per window or burst.
    suffixed = options.unique_for is not None or options.debounce is not None
    for body, key in zip(bodies, keys, strict=True):
        if key is not None:
            _rename(body, f"{key}:{os.urandom(6).hex()}" if suffixed else key)
    delay = options.debounce if options.debounce is not None else options.delay
    return _Batch(
        bodies,
        keys,
        [Future(task, body.id, body.queue) for body in bodies],
        [delay] * len(bodies),
        [options.priority] * len(bodies),
        list(range(len(bodies))),
    )


async def _before_enqueue(
    worker: Worker, task: Task[Any, R], batch: _Batch[R], options: CallOptions
) -> None:
    """Let the `before_enqueue` stage change delays and priorities, or dedupe calls."""
    delay = options.debounce if options.debounce is not None else options.delay
    submissions = await before_enqueue(
        worker.enqueue_stage, task, batch.bodies, delay, options.priority
    )
    for i, submission in enumerate(submissions):
        if submission.dedupe_to is not None:
            queue = batch.bodies[i].queue
            batch.futures[i] = Future(task, submission.dedupe_to, queue, duplicate=True)
    batch.kept = [i for i, s in enumerate(submissions) if s.dedupe_to is None]
    batch.delays = [s.delay for s in submissions]
    batch.priorities = [s.priority for s in submissions]


async def _claim(
    worker: Worker, task: Task[Any, R], batch: _Batch[R], options: CallOptions
) -> tuple[StateStore | None, list[Claim]]:
    """Claim the keys of the kept calls; a call whose key is held gets its job's Future
    (`duplicate`) and is not enqueued. The store and the claims this caller won."""
    keyed = [i for i in batch.kept if batch.keys[i] is not None]
    if not keyed or options.connection is not None:  # a transaction: the broker's dedupe only
        return None, []
    state = (await worker.client()).require_state("job_id")
    wanted = [
        Claim.of(batch.bodies[i].queue, batch.keys[i] or "", batch.bodies[i].id, options)
        for i in keyed
    ]
    won: list[Claim] = []
    for i, claim, holder in zip(keyed, wanted, await take(state, wanted), strict=True):
        body = batch.bodies[i]
        if holder is not None:
            batch.futures[i] = Future(task, holder, body.queue, duplicate=True)
            batch.kept.remove(i)
            continue
        won.append(claim)
        if options.unique_for is None:  # the worker cuts the claim to the result's life
            body.headers = {**(body.headers or {}), UNIQUE_HEADER: batch.keys[i] or ""}
    return state, won


async def _confirm(state: StateStore, won: list[Claim]) -> None:
    """Mark the claims of enqueued jobs, a few tries; the jobs exist whatever happens here.

    If every try fails, callers waiting on a claim take the key over when its pending
    lifetime lapses, and enqueue again (a broker with `dedupes_on_enqueue` drops it).
    """
    for pause in (0.05, 0.2, 1.0):
        try:
            await confirm(state, won)
            return
        except BrokerError as exc:
            log.warning("marking %d unique claim(s) failed: %s; retrying", len(won), exc)
            await asyncio.sleep(pause)
    try:
        await confirm(state, won)
    except BrokerError as exc:
        log.error("unique claims of enqueued jobs left pending: %s", exc)


def _rename(body: JobBody, job_id: str) -> None:
    """Give a new body the id of its unique key (and the root id, if it is its own root)."""
    if body.root_id == body.id:
        body.root_id = job_id
    body.id = job_id
