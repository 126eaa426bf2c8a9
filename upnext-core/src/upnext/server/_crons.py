"""``/api/v1/crons``: every cron's schedule, next and last run, and disable/enable.

Read from the crons' cursors in the state store (`upnext.crons`), so the
server needs none of the crons' code. Without a state store the list is empty
and says why (``state: "unavailable"``), as ``/api/v1/workers`` does.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel

from upnext.crons import CronInfo, disable_cron, enable_cron, list_crons
from upnext.errors import ConfigurationError
from upnext.server._backend import Backend
from upnext.server._models import PRINTABLE

__all__ = ["CronList", "crons_router"]

crons_router = APIRouter(prefix="/api/v1", tags=["crons"])
CronName = Annotated[str, Path(min_length=1, max_length=500, pattern=PRINTABLE)]


class CronList(BaseModel):
    """Every cron, by name; `state` is "unavailable" (and the list empty) without a state store."""

    crons: list[CronInfo]
    state: Literal["available", "unavailable"]
    reason: str | None = None


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


@crons_router.get("/crons")
async def crons(request: Request) -> CronList:
    """Every cron: schedule, timezone, enabled, next run, last tick, last run and its outcome."""
    backend = _backend(request)
    try:
        found = await list_crons(backend.worker)
    except ConfigurationError as exc:
        return CronList(crons=[], state="unavailable", reason=backend.scrub(str(exc)))
    return CronList(crons=found, state="available")


async def _switch(request: Request, name: str, enabled: bool) -> CronInfo:
    worker = _backend(request).worker
    if not any(cron.name == name for cron in await list_crons(worker)):
        raise HTTPException(404, f"no cron named {name!r}")
    await (enable_cron if enabled else disable_cron)(worker, name)
    [info] = [cron for cron in await list_crons(worker) if cron.name == name]
    return info


@crons_router.post("/crons/{name}/disable", responses={404: {"description": "no such cron"}})
async def disable(request: Request, name: CronName) -> CronInfo:
    """Stop the cron firing on every worker until it is enabled."""
    return await _switch(request, name, False)


@crons_router.post("/crons/{name}/enable", responses={404: {"description": "no such cron"}})
async def enable(request: Request, name: CronName) -> CronInfo:
    """Let the cron fire again from its next tick (the ticks passed while disabled never run)."""
    return await _switch(request, name, True)
