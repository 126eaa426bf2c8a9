"""The crons of a broker: list them, disable and enable them at runtime.

Every cron a worker declared has a cursor in the broker's shared state (see
docs/scheduling.md#cron), so these work from any process that reaches the
broker, with or without the cron's code::

    import asyncio
    import upnext
    from upnext.crons import disable_cron, enable_cron, list_crons

    worker = upnext.Worker("reports", "memory://")

    @worker.cron(every=60.0, name="nightly")
    async def nightly() -> None: ...

    async def main() -> None:
        async with worker:
            await asyncio.sleep(0.2)  # the worker's scheduler records the cron
            await disable_cron(worker, "nightly")
            [info] = await list_crons(worker)
            assert info.name == "nightly" and not info.enabled
            await enable_cron(worker, "nightly")

    asyncio.run(main())

A disabled cron fires nothing; enabling it again does not run the ticks it
passed while disabled (the next one after now fires).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from upnext._cronspec import CronSchedule as _CronSchedule
from upnext._cronstate import CronCursor as _CronCursor
from upnext._cronstate import CronRun as _CronRun
from upnext._statekeys import CRON_PREFIX as _PREFIX
from upnext._statekeys import cron_key as _cron_key
from upnext._statekeys import cron_run_key as _cron_run_key
from upnext.broker.state import StateWrite as _StateWrite
from upnext.errors import ConfigurationError as _ConfigurationError

if TYPE_CHECKING:
    from upnext._worker import Worker
    from upnext.broker.state import StateStore

__all__ = ["CronInfo", "CronRunInfo", "disable_cron", "enable_cron", "list_crons"]

_ATTEMPTS = 20  # compare-and-set tries against schedulers writing the same cursor


class CronRunInfo(BaseModel):
    """A cron's latest run: its job, tick, status (``running``, ``succeeded``, ``failed``,
    ``retrying``, ``cancelled``) and times."""

    job_id: str
    scheduled_for: datetime
    status: str
    started_at: datetime
    finished_at: datetime | None = None


class CronInfo(BaseModel):
    """A cron as its stored cursor and latest run describe it.

    `schedule` is the expression (or ``every <n>s``); `next_run` the next tick
    after now (None while disabled); `last_tick` the latest tick handled;
    `last_run` its latest run, with its outcome.
    """

    name: str
    schedule: str
    timezone: str | None
    enabled: bool
    next_run: datetime | None
    last_tick: datetime | None
    last_run: CronRunInfo | None


def _at(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _info(name: str, cursor: _CronCursor, run: _CronRun | None, now: float) -> CronInfo:
    try:
        expression = None if cursor.every is not None else cursor.schedule
        schedule = _CronSchedule(expression, cursor.every, cursor.timezone, f"cron {name}")
        next_run = schedule.moment(schedule.next_after(now)) if cursor.enabled else None
    except _ConfigurationError:  # written by another upnext version
        next_run = None
    last_run = None
    if run is not None:
        last_run = CronRunInfo(
            job_id=run.job_id,
            scheduled_for=_at(run.scheduled_for),
            status=run.status,
            started_at=_at(run.started_at),
            finished_at=None if run.finished_at is None else _at(run.finished_at),
        )
    return CronInfo(
        name=name,
        schedule=cursor.schedule,
        timezone=cursor.timezone,
        enabled=cursor.enabled,
        next_run=next_run,
        last_tick=None if cursor.last_tick is None else _at(cursor.last_tick),
        last_run=last_run,
    )


async def _state(worker: Worker) -> StateStore:
    return (await worker.client()).require_state("cron")


async def list_crons(worker: Worker) -> list[CronInfo]:
    """Every cron known to `worker`'s broker, by name (ConfigurationError if it keeps no state)."""
    state = await _state(worker)
    cursors: list[tuple[str, _CronCursor]] = []
    page_cursor: str | None = None
    while True:
        page = await state.state_scan(_PREFIX, limit=100, cursor=page_cursor)
        for key, entry in page.entries:
            try:
                cursors.append(
                    (key.removeprefix(_PREFIX), _CronCursor.model_validate_json(entry.value))
                )
            except ValidationError:
                continue  # not ours to read
        if (page_cursor := page.next_cursor) is None:
            break
    runs = await state.state_get([_cron_run_key(name) for name, _ in cursors]) if cursors else []
    now = time.time()
    found = []
    for (name, cursor), run_entry in zip(cursors, runs, strict=True):
        try:
            run = None if run_entry is None else _CronRun.model_validate_json(run_entry.value)
        except ValidationError:
            run = None
        found.append(_info(name, cursor, run, now))
    return found


async def _set_enabled(worker: Worker, name: str, enabled: bool) -> None:
    state = await _state(worker)
    for _ in range(_ATTEMPTS):
        [entry] = await state.state_get([_cron_key(name)])
        if entry is None:
            raise _ConfigurationError(
                f"no cron named {name!r} (a worker declaring it records it when it starts)"
            )
        cursor = _CronCursor.model_validate_json(entry.value)
        update: dict[str, object] = {"enabled": enabled}
        if enabled and not cursor.enabled:
            update["last_tick"] = time.time()  # the ticks passed while disabled stay unrun
        data = cursor.model_copy(update=update).model_dump_json().encode()
        [applied] = await state.state_put(
            [_StateWrite(_cron_key(name), data, expect=entry.version)]
        )
        if applied:
            return
    raise _ConfigurationError(f"cron {name!r} kept changing; try again")


async def disable_cron(worker: Worker, name: str) -> None:
    """Stop the cron `name` from firing on every worker until `enable_cron`."""
    await _set_enabled(worker, name, False)


async def enable_cron(worker: Worker, name: str) -> None:
    """Let the cron `name` fire again, from its next tick after now."""
    await _set_enabled(worker, name, True)
