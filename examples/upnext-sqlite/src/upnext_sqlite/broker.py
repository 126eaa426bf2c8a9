"""`SQLiteBroker`: broker, result store, state store, dead-letter and queue admin in one file.

Several processes on one machine share queues through the file (WAL mode).
Every change is one ``BEGIN IMMEDIATE`` transaction, so a take, a settle
batch or a replay is atomic against every other process. Leases and due
times are judged by this host's clock, `time.time()`: one machine, one clock.

SQLite cannot notify another process. A commit in this process wakes this
process's waiters at once (see `_wake`); other processes' commits are seen by
re-checking every `poll` s (default 0.05). So a blocked receive costs one
indexed read per `poll`, and a job enqueued by another process waits up to
`poll` s longer than one enqueued here.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import astuple
from sqlite3 import Connection
from urllib.parse import parse_qsl, urlsplit

from upnext.broker import (
    MAX_PRIORITY,
    Ack,
    Capabilities,
    DeadLetter,
    Delivery,
    Envelope,
    Release,
    ResultWrite,
    Retry,
    SettleItem,
    SettleOutcome,
)
from upnext.errors import ConfigurationError, LeaseLost

from upnext_sqlite import schema
from upnext_sqlite._db import Database
from upnext_sqlite._wake import bells_for, watch
from upnext_sqlite.admin import AdminMixin, write_envelopes
from upnext_sqlite.state import StateMixin

__all__ = ["SQLiteBroker"]

_Taken = tuple[list[Delivery] | None, float | None]


def _live(delivery: Delivery, now: float) -> tuple[object, ...]:
    """Parameters of `schema.LIVE`: this receipt's hand-out still holds the job."""
    token = delivery.receipt if isinstance(delivery.receipt, int) else -1
    return (delivery.envelope.id, token, now)


def _lost(delivery: Delivery) -> LeaseLost:
    return LeaseLost(f"lease lost for job {delivery.envelope.id}")


class SQLiteBroker(AdminMixin, StateMixin):
    """A `Broker`, `ResultStore`, `StateStore`, `DeadLetterAdmin` and `QueueAdmin` on one file."""

    # The defaults (timed leases, exact counts, cancel, an indexed DLQ, exact
    # delays, no joining the caller's transaction), a job id is its key, and
    # a job keeps its priority (a column).
    capabilities = Capabilities(dedupes_on_enqueue=True, priority_levels=MAX_PRIORITY + 1)

    def __init__(self, path: str, *, poll: float = 0.05, busy_timeout: float = 5.0) -> None:
        self.path = os.path.abspath(path)
        self.poll = poll
        self._db = Database(self.path, busy_timeout=busy_timeout)
        self._jobs_bell, self._results_bell = bells_for(os.path.realpath(self.path))
        self._wakes = 0  # wake_receivers calls so far: a receive returns once it changes

    @classmethod
    def from_url(cls, url: str) -> SQLiteBroker:
        """From ``sqlite:///rel.db`` or ``sqlite:////abs.db``; options poll, busy_timeout."""
        parts, known = urlsplit(url), {"poll", "busy_timeout"}
        options = dict(parse_qsl(parts.query))
        try:
            if not url.startswith("sqlite://") or parts.netloc or len(parts.path) < 2:
                raise ValueError("expected sqlite:///<file>")
            if unknown := set(options) - known:
                raise ValueError(f"unknown options {sorted(unknown)}")
            poll, busy = float(options.get("poll", 0.05)), float(options.get("busy_timeout", 5))
            if not (0 < poll <= 1 and busy > 0):
                raise ValueError("poll must be in (0, 1] s and busy_timeout > 0")
        except ValueError as exc:
            raise ConfigurationError(f"bad sqlite URL {url!r}: {exc}") from None
        return cls(parts.path[1:], poll=poll, busy_timeout=busy)

    def __repr__(self) -> str:
        return f"SQLiteBroker({self.path!r})"

    def schema_sql(self) -> str:
        """The tables `connect` creates (upnext.broker.SchemaProvider: `upnext schema`)."""
        return schema.SCHEMA

    async def connect(self) -> None:
        """Open the file and create the tables (idempotent)."""
        await self._db.run(self._db.connection)

    async def aclose(self) -> None:
        """Close the file; unsettled deliveries come back when their leases run out."""
        await self._db.close()

    # -- broker --------------------------------------------------------------

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Store every envelope in one transaction, then wake this process's receivers."""
        if envelopes:
            await self._db.write(lambda c: write_envelopes(c, envelopes), self._jobs_bell)

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Hand out due jobs, sleeping on the bell (and `poll`) up to `wait` s."""
        take = functools.partial(self._take, list(queues), limit, lease)
        wakes = self._wakes

        def woken() -> bool:
            return self._wakes != wakes

        return await watch(self._jobs_bell, take, wait=wait, poll=self.poll, woken=woken) or []

    async def wake_receivers(self) -> None:
        """End this broker's receives in flight (`WakeableReceive`).

        The bell is the file's, so other brokers' receives on it in this
        process wake too; they look once more and wait on.
        """
        self._wakes += 1
        self._jobs_bell.ring()

    async def _take(self, queues: list[str], limit: int, lease: float) -> _Taken:
        """Take due jobs (one transaction on the database thread)."""
        return await self._db.run(lambda: self._take_now(queues, limit, lease))

    def _take_now(self, queues: list[str], limit: int, lease: float) -> _Taken:
        # Queue by queue, so each look is one index seek whatever the backlog;
        # and a plain read first, so an idle receiver never takes the write lock.
        def first_due(conn: Connection) -> float | None:
            dues = [conn.execute(schema.FIRST_DUE, (q,)).fetchone()[0] for q in queues]
            return min((d for d in dues if d is not None), default=None)

        first = first_due(self._db.connection())
        if first is None or first > time.time():
            return None, first
        return self._db.tx(lambda c: _take_rows(c, queues, limit, lease)) or None, None

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Apply the batch in one transaction; LeaseLost for items no longer held."""
        bells = (self._jobs_bell, self._results_bell)
        return await self._db.write(lambda c: self._apply(c, items), *bells)

    def _apply(self, conn: Connection, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        now = time.time()
        outcomes: list[SettleOutcome] = []
        for item in items:
            live = _live(item.delivery, now)
            if isinstance(item, Retry):
                sql, args = schema.RETRY, (item.body, now + max(item.delay, 0.0), *live)
            elif isinstance(item, Release):
                sql, args = schema.RELEASE, (now, *live)
            else:
                sql, args = schema.ACK, live
            if conn.execute(sql, args).rowcount != 1:  # the check-and-set failed
                outcomes.append(_lost(item.delivery))
                continue
            if isinstance(item, DeadLetter):
                conn.execute(schema.DEAD_PUT, astuple(item.record))  # fields in column order
            if isinstance(item, Ack | DeadLetter) and item.result is not None:
                _put(conn, [item.result], now)
            outcomes.append(None)
        return outcomes

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
        """Push each live lease to `lease` s from now, in one transaction."""

        def extend(conn: Connection) -> list[SettleOutcome]:
            now = time.time()
            done = [conn.execute(schema.EXTEND, (now + lease, *_live(d, now))) for d in deliveries]
            return [
                None if c.rowcount == 1 else _lost(d) for c, d in zip(done, deliveries, strict=True)
            ]

        return await self._db.write(extend) if deliveries else []

    async def cancel(self, queue: str, job_id: str) -> bool:
        """Remove a queued or scheduled job of `queue`; False if held or unknown."""
        return await self._db.changes(schema.CANCEL, (job_id, queue, time.time())) == 1

    # -- results -------------------------------------------------------------

    def reply_address(self) -> str | None:
        """Results live in the file; no address is needed."""
        return None

    async def put_results(self, writes: Sequence[ResultWrite]) -> None:
        """Store the results in one transaction and wake this process's waiters."""
        if writes:
            await self._db.write(lambda c: _put(c, writes, time.time()), self._results_bell)

    async def get_result(self, job_id: str, *, queue: str, wait: float) -> bytes | None:
        """The stored result, sleeping on the bell (and `poll`) up to `wait` s."""

        async def look() -> tuple[bytes | None, None]:
            rows = await self._db.rows(schema.RESULT_GET, (job_id, time.time()))
            return (bytes(rows[0][0]) if rows else None), None

        return await watch(self._results_bell, look, wait=wait, poll=self.poll)


def _take_rows(conn: Connection, queues: list[str], limit: int, lease: float) -> list[Delivery]:
    """Hand out up to `limit` due jobs, oldest due first across `queues`."""
    now = time.time()
    due = [row for q in queues for row in conn.execute(schema.DUE, (q, now, limit))]
    rows = sorted(due, key=lambda row: (row[6], row[0]))[:limit]  # by (due, seq)
    conn.executemany(schema.TAKE, [(now + lease, row[0]) for row in rows])
    return [
        Delivery(Envelope(job_id, queue, bytes(body), 0.0, p), token + 1, count > 0, count + 1)
        for _, job_id, queue, body, token, count, _, p in rows
    ]


def _put(conn: Connection, writes: Sequence[ResultWrite], now: float) -> None:
    """Store results for their ttl (ttl <= 0 stores nothing); sweep expired ones."""
    rows = [(w.job_id, w.data, now + w.ttl) for w in writes if w.ttl > 0]
    conn.executemany(schema.RESULT_PUT, rows)
    conn.execute(schema.RESULT_SWEEP, (now,))
