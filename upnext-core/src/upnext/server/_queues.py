"""``/api/v1/queues/paused`` and ``/api/v1/queues/{name}/pause|resume``: pausing a queue.

The pause is a key in the state store (`upnext.queues`), so the server needs
none of the queue's code, and every worker consuming the queue sees it within
a tick. Without a state store the list is empty and says why (``state:
"unavailable"``), as ``/api/v1/crons`` does, and pause/resume answer 422
naming ``results=``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, Field

from upnext.errors import BrokerError, ConfigurationError
from upnext.queues import QueuePause, pause_queue, paused_queues, resume_queue
from upnext.server._backend import Backend
from upnext.server._models import PRINTABLE, QueueInfo

__all__ = ["PauseList", "PauseRequest", "ResumeResult", "queues_router", "with_paused"]

queues_router = APIRouter(prefix="/api/v1", tags=["queues"])
QueueName = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)]


class PauseList(BaseModel):
    """Every paused queue; `state` is "unavailable" (and the list empty) without a state store."""

    paused: list[QueuePause]
    state: Literal["available", "unavailable"]
    reason: str | None = None


class PauseRequest(BaseModel):
    """Why the queue is paused (optional, shown beside the pause)."""

    reason: str | None = Field(default=None, max_length=500, pattern=PRINTABLE)


class ResumeResult(BaseModel):
    """The queue resumed, and whether it was paused."""

    queue: str
    was_paused: bool


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def with_paused(backend: Backend, queues: list[QueueInfo]) -> list[QueueInfo]:
    """`queues` each marked paused or not (null without a state store), and paused ones added.

    A paused queue the broker does not list (AMQP cannot list queues) is
    still shown, with null counts, so it can be resumed.
    """
    try:
        names = {pause.queue for pause in await paused_queues(backend.worker)}
    except (ConfigurationError, BrokerError):  # no store, or a companion store down: counts
        return queues
    marked = [info.model_copy(update={"paused": info.name in names}) for info in queues]
    known = {info.name for info in queues}
    missing = sorted(names - known)
    return marked + [
        QueueInfo(name=n, ready=None, scheduled=None, in_flight=None, dead=None, paused=True)
        for n in missing
    ]


@queues_router.get("/queues/paused")
async def paused(request: Request) -> PauseList:
    """Every paused queue: its name, when it was paused and why."""
    backend = _backend(request)
    try:
        found = await paused_queues(backend.worker)
    except ConfigurationError as exc:
        return PauseList(paused=[], state="unavailable", reason=backend.scrub(str(exc)))
    return PauseList(paused=found, state="available")


@queues_router.post("/queues/{name}/pause")
async def pause(
    request: Request, name: QueueName, body: Annotated[PauseRequest | None, Body()] = None
) -> QueuePause:
    """Stop the queue's jobs starting on every worker (within a tick); running ones finish.

    Submits are still accepted. Pausing a paused queue keeps its first pause.
    """
    reason = body.reason if body is not None else None
    return await pause_queue(_backend(request).worker, name, reason=reason)


@queues_router.post("/queues/{name}/resume")
async def resume(request: Request, name: QueueName) -> ResumeResult:
    """Let the queue's jobs start again (within a tick); `was_paused` is False if it was not."""
    was_paused = await resume_queue(_backend(request).worker, name)
    return ResumeResult(queue=name, was_paused=was_paused)
