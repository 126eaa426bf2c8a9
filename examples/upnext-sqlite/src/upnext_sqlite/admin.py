"""Dead-letter and queue administration for `SQLiteBroker` (a mixin).

Dead letters are listed newest first by a keyset cursor on ``(failed_at,
id)``, so paging stays stable while entries are added and removed; a replay
enqueues the job and removes the entry in one transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from upnext.broker import DeadLetterPage, DeadLetterRecord, Envelope, QueueStats
from upnext.errors import ConfigurationError, DeadLetterNotFound

from upnext_sqlite import schema
from upnext_sqlite._db import Database
from upnext_sqlite._wake import Bell

__all__ = ["AdminMixin", "write_envelopes"]

_RECORD = "SELECT id, job_id, queue, function, reason, failed_at, data FROM upnext_dead"
_CURSOR_PREFIX = "sqlite1:"  # marks cursors this backend made


def write_envelopes(conn: sqlite3.Connection, envelopes: Sequence[Envelope]) -> None:
    """Insert `envelopes`, each due `delay` s from now by this host's clock."""
    now = time.time()
    rows = [(e.id, e.queue, e.body, now + max(e.delay, 0.0), e.priority) for e in envelopes]
    conn.executemany(schema.ENQUEUE, rows)
    conn.executemany(schema.ADD_QUEUE, [(q,) for q in sorted({e.queue for e in envelopes})])


def _record(row: Any) -> DeadLetterRecord:
    entry_id, job_id, queue, function, reason, failed_at, data = row
    return DeadLetterRecord(entry_id, job_id, queue, function, reason, failed_at, bytes(data))


def _cursor(record: DeadLetterRecord) -> str:
    return f"{_CURSOR_PREFIX}{record.failed_at!r}/{record.id}"


def _parse_cursor(cursor: str) -> tuple[float, str]:
    failed_at, sep, entry_id = cursor.removeprefix(_CURSOR_PREFIX).partition("/")
    with contextlib.suppress(ValueError):
        if cursor.startswith(_CURSOR_PREFIX) and sep:
            return float(failed_at), entry_id
    raise ConfigurationError(f"not a dead-letter cursor of this backend: {cursor!r}")


def _removed(conn: sqlite3.Connection, entry_id: str) -> None:
    if conn.execute(schema.DEAD_DELETE, (entry_id,)).rowcount != 1:
        raise DeadLetterNotFound(entry_id)


class AdminMixin:
    """`DeadLetterAdmin` and `QueueAdmin` over the broker's database."""

    _db: Database
    _jobs_bell: Bell

    async def dlq_list(
        self,
        *,
        queue: str | None = None,
        function: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> DeadLetterPage:
        """Records newest first by (failed_at, id), after `cursor`."""
        given = [(col, v) for col, v in (("queue", queue), ("function", function)) if v is not None]
        where = [f"{col} = ?" for col, _ in given]
        args: list[object] = [v for _, v in given]
        if cursor is not None:
            where.append("(failed_at, id) < (?, ?)")
            args.extend(_parse_cursor(cursor))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"{_RECORD}{clause} ORDER BY failed_at DESC, id DESC LIMIT ?"
        rows = await self._db.rows(sql, (*args, limit + 1))  # one more: is there a next page?
        records = [_record(row) for row in rows[:limit]]
        more = len(rows) > limit and records
        return DeadLetterPage(records, _cursor(records[-1]) if more else None)

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
