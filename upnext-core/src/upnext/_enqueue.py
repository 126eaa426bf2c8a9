"""Submitting calls of a task: bodies, `before_enqueue`, unique keys, the enqueue itself.

A call with a unique key (a chosen `job_id`, an idempotency key, a task's
`unique_key`) is claimed in the state store first (`upnext._unique`), or
debounced (`upnext._debounce`); the calls that lost their claim get a
Future for the job holding the key and are not enqueued.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from upnext._calloptions import CallOptions
from upnext._debounce import submit_debounced
from upnext._envelopes import enqueue_bodies
from upnext._future import Future
from upnext._pipeline import before_enqueue
from upnext._serializer import JobBody
from upnext._unique import UNIQUE_HEADER, Claim, confirm, release, take
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._task import Task
    from upnext._worker import Worker

__all__ = ["submit_calls"]

R = TypeVar("R")


async def submit_calls(
    worker: Worker,
    task: Task[Any, R],
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    options: CallOptions,
) -> list[Future[R]]:
    """Validate, encode and enqueue calls of `task` in one round trip (per unique claim, two)."""
    if options.job_id is not None and len(calls) > 1:
        raise ConfigurationError("a fixed job_id applies to a single submit")
    if (options.unique_for is not None or options.debounce is not None) and len(calls) > 1:
        raise ConfigurationError("unique_for and debounce apply to a single submit")
    if options.connection is not None and (options.unique_for or options.debounce):
        raise ConfigurationError("unique_for and debounce cannot enqueue in your transaction")
    bodies = [task.build_body(args, kwargs, options) for args, kwargs in calls]
    keys = [task.key_of(args, kwargs, options) for args, kwargs in calls]
    suffixed = options.unique_for is not None or options.debounce is not None
    for body, key in zip(bodies, keys, strict=True):
        if key is not None:  # a throttled or debounced key names a series of jobs
            _rename(body, f"{key}:{os.urandom(6).hex()}" if suffixed else key)
    futures = [Future(task, body.id, body.queue) for body in bodies]
    delay = options.debounce if options.debounce is not None else options.delay
    delays = [delay] * len(bodies)
    priorities = [options.priority] * len(bodies)
    kept = list(range(len(bodies)))
    if worker.enqueue_stage:
        submissions = await before_enqueue(
            worker.enqueue_stage, task, bodies, delay, options.priority
        )
        for i, submission in enumerate(submissions):
            if submission.dedupe_to is not None:
                futures[i] = Future(task, submission.dedupe_to, bodies[i].queue)
        kept = [i for i, s in enumerate(submissions) if s.dedupe_to is None]
        delays = [s.delay for s in submissions]
        priorities = [s.priority for s in submissions]
    if options.debounce is not None and kept:
        [i] = kept
        key = keys[i]
        assert key is not None  # checked by options()
        debounced = await submit_debounced(
            worker, task, bodies[i], key, options.debounce, delays[i], priorities[i]
        )
        return [debounced]
    claims = [] if options.connection is not None else [i for i in kept if keys[i] is not None]
    won: list[Claim] = []
    state = None
    if claims:
        state = (await worker.client()).require_state("job_id")
        wanted = [Claim.of(bodies[i].queue, keys[i] or "", bodies[i].id, options) for i in claims]
        holders = await take(state, wanted)
        for i, claim, holder in zip(claims, wanted, holders, strict=True):
            if holder is not None:
                futures[i] = Future(task, holder, bodies[i].queue, duplicate=True)
                kept.remove(i)
                continue
            won.append(claim)
            if options.unique_for is None:  # the worker cuts the claim to the result's life
                bodies[i].headers = {**(bodies[i].headers or {}), UNIQUE_HEADER: keys[i] or ""}
    if not kept:
        return futures
    try:
        await enqueue_bodies(
            worker,
            task,
            [bodies[i] for i in kept],
            [delays[i] for i in kept],
            [priorities[i] for i in kept],
            options.connection,
        )
    except BaseException:
        if state is not None and won:
            await asyncio.shield(release(state, won))
        raise
    if state is not None:
        await confirm(state, won)
    return futures


def _rename(body: JobBody, job_id: str) -> None:
    """Give a new body the id of its unique key (and the root id, if it is its own root)."""
    if body.root_id == body.id:
        body.root_id = job_id
    body.id = job_id
