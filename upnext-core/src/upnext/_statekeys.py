"""Every key core keeps in a `StateStore`, in one place.

Core's keys are unscoped and start with ``upnext:``, a prefix core owns; a
store's own namespace (a Redis ``prefix=``, a PostgreSQL ``schema=``) keeps
deployments apart. Features added later put their keys here too.

==============================  ===============================  ==========================
key                             value                            lifetime
==============================  ===============================  ==========================
``upnext:worker:<worker_id>``   a `WorkerInfo` as JSON           written every tick with a
                                                                 TTL of `REGISTRY_TICKS`
                                                                 ticks; deleted at a clean
                                                                 stop
``upnext:cancel:<job_id>``      why the job is to be cancelled   set by whoever cancels,
                                (UTF-8, e.g. ``user``)           with a TTL; read by the
                                                                 tick of the worker that
                                                                 runs the job
``upnext:metrics:<worker_id>``  the worker's job counts, a       written every tick (with
                                `MetricsSnapshot` as JSON        the registry entry, same
                                                                 TTL) by workers with
                                                                 metrics on; deleted at a
                                                                 clean stop
``upnext:history:<worker_id>:   a `HistorySegment` as JSON:      written by the tick that
<n>``                           up to 64 jobs the worker         follows them, with a TTL
                                finished (`upnext._history`)     of `HISTORY_TTL` (1 h);
                                                                 kept after a clean stop
``upnext:cron:<name>``          a cron's cursor, a `CronCursor`  written by the first worker
                                as JSON: its schedule, whether   declaring the cron, then
                                it is enabled, the last tick     with compare-and-set by
                                handled and the ticks claimed    whichever scheduler fires
                                but not yet confirmed enqueued   a tick; no TTL
``upnext:cronrun:<name>``       the cron's latest run, a         written when a run starts
                                `CronRun` as JSON: its job,      (TTL: the task's timeout
                                tick, status and times           + 60 s) and when it ends
                                                                 (no TTL)
``upnext:unique:<queue>:        the job holding a unique key,    ``pending`` for
<key>``                         JSON ``{"job": id, "ok": b}``    `PENDING_TTL` while its
                                (`upnext._unique`)               enqueue is made; then its
                                                                 job's life (or
                                                                 `unique_for`); after the
                                                                 final settle, result_ttl
``upnext:debounce:<queue>:      a debounced burst: its job, due  from the burst's first
<key>``                         time and latest arguments as     submit until its job
                                JSON (`upnext._debounce`)        starts, then its run's life
``upnext:rate:<task>[:<key>]``  slots: one member per start a    each member for the
                                rate limit admitted              window's length
                                (`upnext._flow_limits`)
``upnext:concurrency:<task>     slots: one member (the job id)   from the start until the
[:<key>]``                      per running job of a             body ends; refreshed by
                                concurrency limit                the tick, TTL the lease
``upnext:paused:<queue>``       a paused queue, a `QueuePause`   from `pause_queue` until
                                as JSON (`upnext.queues`)        `resume_queue`; no TTL
==============================  ===============================  ==========================
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from upnext.broker.state import StateStore

__all__ = [
    "CANCEL_PREFIX",
    "CONCURRENCY_PREFIX",
    "CORE_PREFIX",
    "CRON_PREFIX",
    "CRON_RUN_PREFIX",
    "DEBOUNCE_PREFIX",
    "HISTORY_PREFIX",
    "METRICS_PREFIX",
    "PAUSED_PREFIX",
    "RATE_PREFIX",
    "REGISTRY_TICKS",
    "UNIQUE_PREFIX",
    "WORKER_PREFIX",
    "cancel_key",
    "concurrency_slots_key",
    "cron_key",
    "cron_run_key",
    "debounce_key",
    "history_key",
    "metrics_key",
    "paused_key",
    "rate_slots_key",
    "read_prefix",
    "unique_key",
    "worker_key",
]

log = logging.getLogger("upnext.state")
M = TypeVar("M", bound=BaseModel)

CORE_PREFIX: Final = "upnext:"
WORKER_PREFIX: Final = f"{CORE_PREFIX}worker:"
CANCEL_PREFIX: Final = f"{CORE_PREFIX}cancel:"
METRICS_PREFIX: Final = f"{CORE_PREFIX}metrics:"
HISTORY_PREFIX: Final = f"{CORE_PREFIX}history:"
CRON_PREFIX: Final = f"{CORE_PREFIX}cron:"
CRON_RUN_PREFIX: Final = f"{CORE_PREFIX}cronrun:"
UNIQUE_PREFIX: Final = f"{CORE_PREFIX}unique:"
DEBOUNCE_PREFIX: Final = f"{CORE_PREFIX}debounce:"
RATE_PREFIX: Final = f"{CORE_PREFIX}rate:"
CONCURRENCY_PREFIX: Final = f"{CORE_PREFIX}concurrency:"
PAUSED_PREFIX: Final = f"{CORE_PREFIX}paused:"
REGISTRY_TICKS: Final = 5
"""A registry entry outlives its last write by this many ticks: a dead worker leaves after them."""


def worker_key(worker_id: str) -> str:
    """The registry key of a worker."""
    return f"{WORKER_PREFIX}{worker_id}"


def cancel_key(job_id: str) -> str:
    """The key of a job's cancel marker."""
    return f"{CANCEL_PREFIX}{job_id}"


def metrics_key(worker_id: str) -> str:
    """The key of a worker's metrics snapshot."""
    return f"{METRICS_PREFIX}{worker_id}"


def history_key(worker_id: str, segment: int) -> str:
    """The key of one segment of a worker's recent-jobs history."""
    return f"{HISTORY_PREFIX}{worker_id}:{segment}"


def cron_key(name: str) -> str:
    """The key of a cron's cursor."""
    return f"{CRON_PREFIX}{name}"


def cron_run_key(name: str) -> str:
    """The key of a cron's latest run."""
    return f"{CRON_RUN_PREFIX}{name}"


def unique_key(queue: str, key: str) -> str:
    """The key of a unique job's claim (`upnext._unique`)."""
    return f"{UNIQUE_PREFIX}{queue}:{key}"


def debounce_key(queue: str, key: str) -> str:
    """The key of a debounced burst (`upnext._debounce`)."""
    return f"{DEBOUNCE_PREFIX}{queue}:{key}"


def rate_slots_key(limit: str) -> str:
    """The slots of a rate limit's window: ``<task>`` or ``<task>:<rate_key's value>``."""
    return f"{RATE_PREFIX}{limit}"


def concurrency_slots_key(limit: str) -> str:
    """The slots of a concurrency limit: ``<task>`` or ``<task>:<concurrency_key's value>``."""
    return f"{CONCURRENCY_PREFIX}{limit}"


def paused_key(queue: str) -> str:
    """The key marking a queue paused (`upnext.queues`)."""
    return f"{PAUSED_PREFIX}{queue}"


async def read_prefix(state: StateStore, prefix: str, model: type[M]) -> list[M]:
    """Every live value under `prefix` read as `model`, in key order.

    A value that is not a `model` (written by another upnext version) is
    skipped: not ours to read.
    """
    found: list[M] = []
    cursor: str | None = None
    while True:
        page = await state.state_scan(prefix, limit=100, cursor=cursor)
        for key, entry in page.entries:
            try:
                found.append(model.model_validate_json(entry.value))
            except ValidationError:
                log.debug("skipping state entry %s: not a %s", key, model.__name__)
        if (cursor := page.next_cursor) is None:
            return found
