"""The recent-jobs history: what each worker finished lately, written by its tick.

A worker remembers the jobs it finished (complete, failed, cancelled) in a
ring of the last `HISTORY_RING`, from the executor's fixed tail once the
settlement is durable: a tuple appended per job, no I/O and no coroutine (as
the job's log line, `upnext._joblog`). Its tick (`upnext._tick.WorkerTick`)
writes the entries finished since the tick before, in the same state-store
call as its registry entry, so the history costs no round trip of its own.

In the store a worker's history is `HISTORY_SEGMENTS` keys
``upnext:history:<worker_id>:<n>``, each a `HistorySegment` of up to
`SEGMENT_JOBS` entries (and at most one state value). New entries fill the
current segment, which is written again each tick until full; then the next
one (modulo `HISTORY_SEGMENTS`, the oldest overwritten) takes over. So a
worker keeps at most ``HISTORY_SEGMENTS * SEGMENT_JOBS`` entries in the
store, each segment expiring `HISTORY_TTL` seconds after its last write: a
window of the last few hundred jobs per worker and at most an hour, not a
record of every job.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_json

from upnext._logsafe import scrub
from upnext._statekeys import HISTORY_PREFIX, history_key
from upnext._statekeys import read_prefix as _read_prefix
from upnext.broker.protocol import DeadLetter
from upnext.broker.state import STATE_VALUE_MAX, StateWrite

if TYPE_CHECKING:
    from upnext._jobrun import JobRun
    from upnext._settlement import Settlement
    from upnext.broker.state import StateStore
    from upnext.middleware._types import Job

__all__ = [
    "HISTORY_RING",
    "HISTORY_SEGMENTS",
    "HISTORY_TTL",
    "SEGMENT_JOBS",
    "FinishedJob",
    "HistorySegment",
    "JobHistory",
    "read_history",
]

HISTORY_RING: Final = 500
"""Finished jobs a worker remembers between two ticks (older ones are dropped unwritten)."""
SEGMENT_JOBS: Final = 64
"""Entries per stored segment."""
HISTORY_SEGMENTS: Final = 8
"""Segments per worker: at most ``8 * 64 = 512`` entries of one worker in the store."""
HISTORY_TTL: Final = 3600.0
"""Seconds a segment outlives its last write."""

_ERROR_CHARS = 300  # one line a person reads, as in the job's log line
_SEGMENT_BUDGET = STATE_VALUE_MAX - 1024  # entries' bytes; the rest for the worker id around
_FINAL = frozenset({"complete", "failed", "cancelled"})

# What the fixed tail appends per job (fields in `FinishedJob`'s order, worker_id aside).
_Entry = tuple[
    str,  # job_id
    str,  # queue
    str,  # function
    str,  # status
    int,  # attempt
    float | None,  # enqueued_at
    float | None,  # started_at
    float,  # finished_at
    str | None,  # error
    str | None,  # parent_id
    str | None,  # root_id
    str | None,  # replay_of
    str | None,  # dlq_entry_id
]
_FIELDS = (
    "job_id",
    "queue",
    "function",
    "status",
    "attempt",
    "enqueued_at",
    "started_at",
    "finished_at",
    "error",
    "parent_id",
    "root_id",
    "replay_of",
    "dlq_entry_id",
)


class FinishedJob(BaseModel):
    """One job a worker finished: status, attempt, times (epoch seconds), lineage, error.

    `status` is the settlement's: ``complete``, ``failed`` (dead-lettered:
    `dlq_entry_id` names its entry) or ``cancelled``. `error` is one line,
    ``Type: message``, with passwords hidden. `started_at` is None for a job
    that never ran (cancelled while it waited, dead-lettered undecodable).
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    queue: str
    function: str
    status: str
    attempt: int
    worker_id: str
    enqueued_at: float | None
    started_at: float | None
    finished_at: float
    duration_ms: float | None
    error: str | None
    parent_id: str | None
    root_id: str | None
    replay_of: str | None
    dlq_entry_id: str | None


class HistorySegment(BaseModel):
    """One stored segment of a worker's history, oldest entry first."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    jobs: list[FinishedJob]


def _error_line(settlement: Settlement) -> str | None:
    """The settlement's error (or cancel reason) on one line, cut and scrubbed."""
    text = next((event.error for _, _, event in settlement.events if event.error), None)
    if not text or not text.strip():
        return None
    line = text.strip().splitlines()[0]
    if len(line) > _ERROR_CHARS:
        line = line[: _ERROR_CHARS - 3] + "..."
    return scrub(line)


class JobHistory:
    """A worker's ring of finished jobs, and the segments its tick writes from it."""

    def __init__(self, ring: int = HISTORY_RING) -> None:
        self._ring: deque[_Entry] = deque(maxlen=ring)
        self._added = 0  # entries ever appended
        self._written = 0  # ... of which the tick has taken
        self._segment = 0  # the index of the segment being filled
        self._current: list[bytes] = []  # its encoded entries
        self._size = 0  # their bytes

    def __len__(self) -> int:
        return len(self._ring)

    def record(self, job: Job, run: JobRun, settlement: Settlement) -> None:
        """Remember `job` if `settlement` finished it (the hot path: one tuple, no I/O)."""
        status = settlement.status
        body = job.body
        if status == "complete" and body is not None and run.finished is not None:
            self._ring.append(
                (
                    job.id,
                    job.queue,
                    job.function,
                    status,
                    job.attempt,
                    body.enqueued_at or None,
                    run.started,
                    run.finished,
                    None,
                    body.parent_id,
                    body.root_id or body.id,
                    body.replay_of,
                    None,
                )
            )
            self._added += 1
        elif status in _FINAL:
            self._record_other(job, run, settlement)

    def _record_other(self, job: Job, run: JobRun, settlement: Settlement) -> None:
        """A failed or cancelled job, or a success settled without a body's end time."""
        body, item = job.body, settlement.item
        # attempts charged, as the dead letter records them (none for a job that never ran)
        attempt = next((event.attempt for _, _, event in settlement.events), job.attempt)
        self._ring.append(
            (
                job.id,
                job.queue,
                job.function,
                settlement.status,
                attempt,
                body.enqueued_at or None if body is not None else None,
                run.started,
                run.finished if run.finished is not None else time.time(),
                _error_line(settlement),
                body.parent_id if body is not None else None,
                (body.root_id or body.id) if body is not None else None,
                body.replay_of if body is not None else None,
                item.record.id if isinstance(item, DeadLetter) else None,
            )
        )
        self._added += 1

    def pending(self) -> int:
        """Entries finished since the last `writes` (at most the ring's size)."""
        return min(self._added - self._written, len(self._ring))

    def writes(self, worker_id: str) -> list[StateWrite]:
        """The segments the entries new since the last call go to, as state writes (once)."""
        new = self.pending()
        self._written = self._added
        if not new:
            return []
        prefix = b'{"worker_id":' + to_json(worker_id) + b',"jobs":['
        touched: dict[int, bytes] = {}
        for entry in list(self._ring)[-new:]:
            data = _encode(entry, worker_id)
            if len(data) > _SEGMENT_BUDGET:
                continue  # a single entry too large for a segment: not kept
            if len(self._current) >= SEGMENT_JOBS or self._size + len(data) > _SEGMENT_BUDGET:
                touched[self._segment] = prefix + b",".join(self._current) + b"]}"
                self._segment = (self._segment + 1) % HISTORY_SEGMENTS
                self._current, self._size = [], 0
            self._current.append(data)
            self._size += len(data) + 1
            touched[self._segment] = b""  # written below, with everything it holds
        if self._current:
            touched[self._segment] = prefix + b",".join(self._current) + b"]}"
        return [
            StateWrite(history_key(worker_id, index), value, HISTORY_TTL)
            for index, value in touched.items()
            if value
        ]


def _encode(entry: _Entry, worker_id: str) -> bytes:
    fields = dict(zip(_FIELDS, entry, strict=True))
    fields["worker_id"] = worker_id
    started, finished = entry[6], entry[7]
    fields["duration_ms"] = (
        None if started is None else round(max(finished - started, 0.0) * 1000, 3)
    )
    return to_json(fields)


async def read_history(state: StateStore) -> list[FinishedJob]:
    """Every finished job in `state`'s history (every worker's live segments), unordered."""
    segments = await _read_prefix(state, HISTORY_PREFIX, HistorySegment)
    return [job for segment in segments for job in segment.jobs]
