"""Dead-letter and queue admin, and the job browser, for `PostgresBroker`, as a mixin.

Dead letters are read newest first by a keyset query on ``(failed_at, id)``
over an index (core pages over it), so a page costs O(log n + limit) and
stays stable under concurrent inserts and deletes. Replay deletes the entry and inserts the new
job in one statement: of two concurrent replays, the second finds the row gone.
Waiting jobs are read by keyset pages too (`_browse`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from upnext.broker.optional import WaitingPage
from upnext.broker.protocol import DeadLetterQuery, DeadLetterRecord, Envelope, QueueStats
from upnext.errors import DeadLetterNotFound

from upnext_postgres._browse import waiting_page, waiting_query
from upnext_postgres._errors import bounded

if TYPE_CHECKING:
    from upnext_postgres.schema import Names

__all__ = ["AdminMixin"]

_COLUMNS = "id, job_id, queue, function, reason, failed_at, data"


def _record(row: asyncpg.Record) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=row["id"],
        job_id=row["job_id"],
        queue=row["queue"],
        function=row["function"],
        reason=row["reason"],
        failed_at=row["failed_at"],
        data=row["data"],
    )


class AdminMixin:
    """`DeadLetterAdmin`, `QueueAdmin` and `JobBrowser` over the broker's pool."""

    _names: Names
    _where: str
    _deadline: float

    async def _pool(self) -> asyncpg.Pool[asyncpg.Record]:
        raise NotImplementedError

    async def _fetch(self, what: str, sql: str, *args: object) -> list[asyncpg.Record]:
        async with bounded(self._where, what, self._deadline):
            return await (await self._pool()).fetch(sql, *args)

    # -- dead letters --------------------------------------------------------

    async def dlq_records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """The records `query` asks for, by a keyset scan of an index."""
        conds: list[str] = []
        args: list[object] = []
        for column, value in (("queue", query.queue), ("job_id", query.job_id)):
            if value is not None:
                args.append(value)
                conds.append(f"{column} = ${len(args)}")
        if query.function is not None:
            # The dotted name or a dotted suffix of it (DeadLetterQuery.function).
            args.append(query.function)
            f = f"${len(args)}::text"
            conds.append(f"(function = {f} OR right(function, length({f}) + 1) = '.' || {f})")
        if query.before is not None:
            args.extend(query.before)
            conds.append(f"(failed_at, id) < (${len(args) - 1}::float8, ${len(args)}::text)")
        args.append(query.limit)
        sql = (
            f"SELECT {_COLUMNS} FROM {self._names.dead_letters} "
            f"WHERE {' AND '.join(conds) or 'true'} "
            f"ORDER BY failed_at DESC, id DESC LIMIT ${len(args)}"
        )
        return [_record(row) for row in await self._fetch("list dead letters", sql, *args)]

    async def dlq_get(self, entry_id: str) -> DeadLetterRecord:
        """One record; `DeadLetterNotFound` if absent."""
        sql = f"SELECT {_COLUMNS} FROM {self._names.dead_letters} WHERE id = $1"
        rows = await self._fetch("get dead letter", sql, entry_id)
        if not rows:
            raise DeadLetterNotFound(entry_id)
        return _record(rows[0])

    async def dlq_replay(self, entry_id: str, envelope: Envelope) -> None:
        """Delete the entry and enqueue `envelope` in one statement; else `DeadLetterNotFound`."""
        n = self._names
        sql = f"""
WITH gone AS (DELETE FROM {n.dead_letters} WHERE id = $1 RETURNING id),
ins AS (
    INSERT INTO {n.jobs} (id, queue, body, due_at, priority)
    SELECT $2, $3, $4, now() + make_interval(secs => $5::float8), $8::int2 FROM gone
    ON CONFLICT (id) DO NOTHING
)
SELECT pg_notify($6, $7)::text FROM gone"""
        delay = max(envelope.delay, 0.0)
        rows = await self._fetch(
            "replay dead letter",
            sql,
            entry_id,
            envelope.id,
            envelope.queue,
            envelope.body,
            delay,
            n.jobs_channel,
            f"{delay!r} {envelope.queue}",
            envelope.priority,
        )
        if not rows:
            raise DeadLetterNotFound(entry_id)

    async def dlq_delete(self, entry_id: str) -> None:
        """Remove an entry; `DeadLetterNotFound` if absent."""
        sql = f"DELETE FROM {self._names.dead_letters} WHERE id = $1 RETURNING 1"
        if not await self._fetch("delete dead letter", sql, entry_id):
            raise DeadLetterNotFound(entry_id)

    async def dlq_purge(self, queue: str | None = None) -> int:
        """Remove every entry (of `queue`); how many were removed."""
        where, args = ("WHERE queue = $1", [queue]) if queue is not None else ("", [])
        sql = (
            f"WITH d AS (DELETE FROM {self._names.dead_letters} {where} RETURNING 1) "
            "SELECT count(*) AS n FROM d"
        )
        rows = await self._fetch("purge dead letters", sql, *args)
        return int(rows[0]["n"])

    async def dlq_count(self, queue: str | None = None) -> int:
        """How many entries (of `queue`)."""
        where, args = ("WHERE queue = $1", [queue]) if queue is not None else ("", [])
        sql = f"SELECT count(*) AS n FROM {self._names.dead_letters} {where}"
        rows = await self._fetch("count dead letters", sql, *args)
        return int(rows[0]["n"])

    # -- queues --------------------------------------------------------------

    async def queues(self) -> list[str]:
        """Queues that hold jobs or dead letters now (a skip scan over the indexes)."""
        n = self._names

        def distinct(name: str, table: str, where: str) -> str:
            # Loose index scan: one index probe per distinct queue, not per row.
            return f"""{name} AS (
    SELECT min(queue) AS q FROM {table} WHERE {where}
    UNION ALL
    SELECT (SELECT min(queue) FROM {table} WHERE {where} AND queue > {name}.q)
    FROM {name} WHERE {name}.q IS NOT NULL)"""

        sql = f"""WITH RECURSIVE
{distinct("r", n.jobs, "lease_until IS NULL")},
{distinct("l", n.jobs, "lease_until IS NOT NULL")},
{distinct("d", n.dead_letters, "true")}
SELECT q FROM r WHERE q IS NOT NULL UNION SELECT q FROM l WHERE q IS NOT NULL
UNION SELECT q FROM d WHERE q IS NOT NULL ORDER BY 1"""
        rows = await self._fetch("list queues", sql)
        return [r["q"] for r in rows]

    async def stats(self, queue: str) -> QueueStats:
        """Ready, scheduled, in-flight and dead counts (an expired lease counts as ready)."""
        n = self._names
        sql = f"""
SELECT
    (SELECT count(*) FROM {n.jobs}
     WHERE queue = $1 AND lease_until IS NULL AND due_at <= now())
  + (SELECT count(*) FROM {n.jobs}
     WHERE queue = $1 AND lease_until IS NOT NULL AND lease_until < now()) AS ready,
    (SELECT count(*) FROM {n.jobs}
     WHERE queue = $1 AND lease_until IS NULL AND due_at > now()) AS scheduled,
    (SELECT count(*) FROM {n.jobs}
     WHERE queue = $1 AND lease_until IS NOT NULL AND lease_until >= now()) AS in_flight,
    (SELECT count(*) FROM {n.dead_letters} WHERE queue = $1) AS dead"""
        row = (await self._fetch("queue stats", sql, queue))[0]
        return QueueStats(
            int(row["ready"]), int(row["scheduled"]), int(row["in_flight"]), int(row["dead"])
        )

    async def purge(self, queue: str) -> int:
        """Delete every ready and scheduled job of `queue`; held jobs stay."""
        sql = (
            f"WITH d AS (DELETE FROM {self._names.jobs} "
            "WHERE queue = $1 AND lease_until IS NULL RETURNING 1) SELECT count(*) AS n FROM d"
        )
        rows = await self._fetch("purge queue", sql, queue)
        return int(rows[0]["n"])

    async def waiting_jobs(
        self, queue: str, *, scheduled: bool, limit: int, cursor: str | None = None
    ) -> WaitingPage:
        """Waiting jobs of `queue`: ready ones in receive's order, or scheduled soonest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        sql, args = waiting_query(self._names, scheduled=scheduled, cursor=cursor)
        rows = await self._fetch("list waiting jobs", sql, queue, limit + 1, *args)
        return waiting_page(rows, queue, scheduled=scheduled, limit=limit)
