"""Dead-letter and queue administration, and the job browser, for `SQLiteBroker` (a mixin).

Dead letters are read newest first by a keyset query on ``(failed_at, id)``
(core pages over it); a replay enqueues the job and removes the entry in one
transaction. Waiting jobs are read by keyset pages on ``(due, seq)``, the
order receive takes them in; a cursor names the last job's key.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from upnext.broker import DeadLetterQuery, DeadLetterRecord, Envelope, QueueStats
from upnext.broker.cursor import key_cursor, parse_key_cursor
from upnext.broker.optional import WaitingJob, WaitingPage
from upnext.errors import DeadLetterNotFound

from upnext_sqlite import schema
from upnext_sqlite._db import Database
from upnext_sqlite._wake import Bell

__all__ = ["AdminMixin", "write_envelopes"]

_WAITING = {False: "sr1.", True: "ss1."}  # the cursor tag of ready and of scheduled pages
_RECORD = "SELECT id, job_id, queue, function, reason, failed_at, data FROM upnext_dead"


def write_envelopes(conn: sqlite3.Connection, envelopes: Sequence[Envelope]) -> None:
    """Insert `envelopes`, each due `delay` s from now by this host's clock."""
    now = time.time()
    rows = [(e.id, e.queue, e.body, now + max(e.delay, 0.0), e.priority) for e in envelopes]
    conn.executemany(schema.ENQUEUE, rows)
    conn.executemany(schema.ADD_QUEUE, [(q,) for q in sorted({e.queue for e in envelopes})])


def _record(row: Any) -> DeadLetterRecord:
    entry_id, job_id, queue, function, reason, failed_at, data = row
    return DeadLetterRecord(entry_id, job_id, queue, function, reason, failed_at, bytes(data))


def _removed(conn: sqlite3.Connection, entry_id: str) -> None:
    if conn.execute(schema.DEAD_DELETE, (entry_id,)).rowcount != 1:
        raise DeadLetterNotFound(entry_id)


class AdminMixin:
    """`DeadLetterAdmin` and `QueueAdmin` over the broker's database."""

    _db: Database
    _jobs_bell: Bell

    async def dlq_records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """The records `query` asks for, by a keyset scan of an index."""
        given = [("queue = ?", query.queue), ("job_id = ?", query.job_id)]
        where = [cond for cond, value in given if value is not None]
        args: list[object] = [value for _, value in given if value is not None]
        if query.function is not None:
            # The dotted name or a dotted suffix of it (DeadLetterQuery.function).
            where.append("(function = ? OR substr(function, -length(?) - 1) = '.' || ?)")
            args.extend([query.function] * 3)
        if query.before is not None:
            where.append("(failed_at, id) < (?, ?)")
            args.extend(query.before)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"{_RECORD}{clause} ORDER BY failed_at DESC, id DESC LIMIT ?"
        return [_record(row) for row in await self._db.rows(sql, (*args, query.limit))]

    async def dlq_get(self, entry_id: str) -> DeadLetterRecord:
        """One record, or DeadLetterNotFound."""
        for row in await self._db.rows(f"{_RECORD} WHERE id = ?", (entry_id,)):
            return _record(row)
        raise DeadLetterNotFound(entry_id)

    async def dlq_replay(self, entry_id: str, envelope: Envelope) -> None:
        """Remove the entry and enqueue `envelope` in one transaction."""

        def replay(conn: sqlite3.Connection) -> None:
            _removed(conn, entry_id)  # raises first: a lost race enqueues nothing
            write_envelopes(conn, [envelope])

        await self._db.write(replay, self._jobs_bell)

    async def dlq_delete(self, entry_id: str) -> None:
        """Remove one entry, or DeadLetterNotFound."""
        await self._db.write(lambda c: _removed(c, entry_id))

    async def dlq_purge(self, queue: str | None = None) -> int:
        """Remove every entry (of `queue`); how many."""
        return await self._db.changes(schema.DEAD_PURGE, (queue,))

    async def dlq_count(self, queue: str | None = None) -> int:
        """How many entries (of `queue`)."""
        [(count,)] = await self._db.rows(schema.DEAD_COUNT, (queue,))
        return int(count)

    async def queues(self) -> list[str]:
        """Every queue that has had a job enqueued."""
        rows = await self._db.rows("SELECT name FROM upnext_queues ORDER BY name")
        return [str(name) for (name,) in rows]

    async def stats(self, queue: str) -> QueueStats:
        """Exact ready, scheduled, in-flight and dead counts, in one snapshot."""
        [row] = await self._db.rows(schema.STATS, (time.time(), queue))
        return QueueStats(*(int(n) for n in row))

    async def purge(self, queue: str) -> int:
        """Drop ready and scheduled jobs of `queue`; live hand-outs stay."""
        return await self._db.changes(schema.PURGE, (queue, time.time()))

    async def waiting_jobs(
        self, queue: str, *, scheduled: bool, limit: int, cursor: str | None = None
    ) -> WaitingPage:
        """Waiting jobs of `queue`: ready ones in receive's order, or scheduled soonest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        tag, now = _WAITING[scheduled], time.time()
        after: tuple[float, int] = (-math.inf, 0)
        if cursor is not None:
            due, seq = parse_key_cursor(cursor, tag, (float, int), "waiting-jobs")
            after = (float(due), int(seq))
        if scheduled:  # past now too: (now, the largest seq) is after every job due by now
            sql, args = schema.WAITING_SCHEDULED, [queue, *max(after, (now, 2**63 - 1))]
        else:
            sql, args = schema.WAITING_READY, [queue, now, *after]
        rows = await self._db.rows(sql, [*args, limit + 1])
        jobs = [
            WaitingJob(job_id, queue, bytes(body), priority, due if scheduled else None)
            for due, _, job_id, body, priority in rows[:limit]
        ]
        if len(rows) <= limit:
            return WaitingPage(jobs, None)
        due, seq = rows[limit - 1][:2]
        return WaitingPage(jobs, key_cursor(tag, [due, seq]))
