"""Pause and resume a queue on every worker, at runtime.

A pause is a key in the broker's shared state (``upnext:paused:<queue>``, no
TTL), so it works from any process that reaches the broker and outlives
worker restarts. Every worker consuming the queue reads it in its tick (once
a second), so within about a second no job of a paused queue starts anywhere;
jobs already running finish; submits are still accepted and wait in the
queue; a worker starting while the queue is paused starts none of its jobs::

    import upnext
    from upnext.queues import pause_queue, paused_queues, resume_queue

    worker = upnext.Worker("orders", "memory://")

    async def main() -> None:
        await pause_queue(worker, "orders", reason="payment provider down")
        [pause] = await paused_queues(worker)
        assert pause.queue == "orders"
        await resume_queue(worker, "orders")

The issue asked for ``worker.queues.pause(...)``; `Worker.queues` is already
the list of queues a worker consumes, so these are functions, like
`upnext.crons`. Without a state store (RabbitMQ with no ``results=``) each
raises `ConfigurationError` naming ``results=``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from upnext._statekeys import PAUSED_PREFIX as _PREFIX
from upnext._statekeys import paused_key as _paused_key
from upnext._statekeys import read_prefix as _read_prefix
from upnext.broker.state import StateWrite as _StateWrite
from upnext.errors import ConfigurationError as _ConfigurationError

if TYPE_CHECKING:
    from upnext._worker import Worker
    from upnext.broker.state import StateStore

__all__ = ["QueuePause", "pause_queue", "paused_queues", "resume_queue"]

_REASON_MAX = 500


class QueuePause(BaseModel):
    """A paused queue: its name, when it was paused and why (if a reason was given)."""

    queue: str
    paused_at: datetime
    reason: str | None = Field(default=None, max_length=_REASON_MAX)


async def _state(worker: Worker) -> StateStore:
    return (await worker.client()).require_state("pausing a queue")


def _check(queue: str) -> None:
    if not queue or not queue.isprintable():
        raise _ConfigurationError(f"a queue name must be printable and non-empty, got {queue!r}")


async def pause_queue(worker: Worker, queue: str, *, reason: str | None = None) -> QueuePause:
    """Stop jobs of `queue` starting on every worker until `resume_queue`; the pause.

    Pausing a paused queue keeps its first pause (time and reason). Running
    jobs finish; submits are accepted and wait.
    """
    _check(queue)
    if reason is not None and len(reason) > _REASON_MAX:
        raise _ConfigurationError(f"a pause reason is at most {_REASON_MAX} characters")
    state = await _state(worker)
    now = datetime.fromtimestamp(time.time(), UTC)
    pause = QueuePause(queue=queue, paused_at=now, reason=reason)
    data = pause.model_dump_json().encode()
    [applied] = await state.state_put([_StateWrite(_paused_key(queue), data, expect="absent")])
    if applied:
        return pause
    [entry] = await state.state_get([_paused_key(queue)])
    if entry is None:  # resumed meanwhile: pause again, unconditionally
        await state.state_put([_StateWrite(_paused_key(queue), data)])
        return pause
    return QueuePause.model_validate_json(entry.value)


async def resume_queue(worker: Worker, queue: str) -> bool:
    """Let jobs of `queue` start again (within about a second); False if it was not paused."""
    _check(queue)
    state = await _state(worker)
    [entry] = await state.state_get([_paused_key(queue)])
    await state.state_put([_StateWrite(_paused_key(queue), None)])
    return entry is not None


async def paused_queues(worker: Worker) -> list[QueuePause]:
    """Every paused queue of `worker`'s broker, by name (ConfigurationError without state)."""
    return await _read_prefix(await _state(worker), _PREFIX, QueuePause)
