"""`PostgresBroker`: broker, result store, dead-letter and queue admin on PostgreSQL.

Jobs are rows. Receive takes due rows with ``FOR UPDATE SKIP LOCKED`` and
stamps a lease judged by the server's ``now()``; a row whose lease ran out is
receivable again and comes back with ``redelivered=True``. Every operation is
one statement (one round trip) per batch. Idle receivers block on the shared
LISTEN connection, woken by NOTIFY, by a local timer armed for the next due
time or lease expiry they know of, and at the latest after
``lease_recovery_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from upnext.broker import Backoff
from upnext.broker.protocol import (
    MAX_PRIORITY,
    Capabilities,
    Delivery,
    Envelope,
    ResultWrite,
    SettleItem,
    SettleOutcome,
)
from upnext.errors import BrokerUnavailable, ConfigurationError, LeaseLost

from upnext_postgres._admin import AdminMixin
from upnext_postgres._errors import bounded, mapped
from upnext_postgres._listener import Listener
from upnext_postgres._options import PostgresOptions
from upnext_postgres._queries import Queries, enqueue_arguments
from upnext_postgres._settle import SettleBatch
from upnext_postgres._state import StateMixin
from upnext_postgres.schema import Names, migrate, schema_sql

__all__ = ["PostgresBroker"]

_CLEANUP_EVERY = 60.0  # seconds between sweeps of expired results


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool reset hook: nothing to undo (our connections never change session state).

    asyncpg still rolls back an open transaction; skipping its default reset
    query saves one round trip per pooled operation.
    """


class PostgresBroker(AdminMixin, StateMixin):
    """Broker, result store, state store, dead-letter and queue admin on one PostgreSQL schema."""

    capabilities = Capabilities(
        timed_leases=True,
        counts_deliveries=True,
        cancel_queued=True,
        dlq_access="indexed",
        dedupes_on_enqueue=True,  # the job id is the primary key: ON CONFLICT DO NOTHING
        transactional_enqueue=True,
        delay_quantum=0.0,
        priority_levels=MAX_PRIORITY + 1,
    )

    def __init__(self, options: PostgresOptions) -> None:
        self.options = options
        self._names = Names(options.schema)
        self._q = Queries.build(self._names)
        self._where = options.redacted
        # One call, a new connection and its statement included, ends within this.
        self._deadline = options.connect_timeout + options.command_timeout
        self._pool_obj: asyncpg.Pool[asyncpg.Record] | None = None
        self._connect_lock = asyncio.Lock()
        self._listener = Listener(
            options.dsn,
            self._names,
            connect_timeout=options.connect_timeout,
            where=self._where,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # A worker's settle and extend touch the same rows; run concurrently they
        # could lock them in opposite orders and deadlock (PostgreSQL would abort
        # one after deadlock_timeout). One at a time per broker costs nothing.
        self._row_locks = asyncio.Lock()
        # Bumped by aclose: calls blocked across it end instead of reconnecting.
        self._generation = 0
        self._wakes = 0  # wake_receivers calls so far: a receive returns once it changes
        self._next_cleanup = 0.0

    @classmethod
    def from_url(cls, url: str) -> PostgresBroker:
        """A broker for a ``postgresql://`` or ``postgres://`` URL (not yet connected)."""
        return cls(PostgresOptions.from_url(url))

    def __repr__(self) -> str:
        return f"PostgresBroker({self._where!r}, schema={self._names.schema!r})"

    def schema_sql(self) -> str:
        """The DDL this broker would apply at connect (what `upnext schema` prints)."""
        return schema_sql(self._names.schema)

    # -- lifecycle -----------------------------------------------------------

    async def connect(self) -> None:
        """Open the pool and create or migrate the schema (idempotent)."""
        if self._connected():
            return
        async with self._connect_lock:
            if self._connected():
                return
            opts = self.options
            with mapped(self._where, "connect"):
                pool = await asyncpg.create_pool(
                    opts.dsn,
                    # Two ready connections: a worker receives while it settles or submits.
                    min_size=min(2, opts.pool_size),
                    max_size=opts.pool_size,
                    timeout=opts.connect_timeout,
                    command_timeout=opts.command_timeout,
                    reset=_keep_session,
                    # Our statements are few and parameterised: plan each once per
                    # connection; every plan is index-driven whatever the values.
                    # No JIT: a generic plan's cost grows with the table, and past
                    # jit_above_cost PostgreSQL compiled every receive anew (25 ms
                    # instead of 3 ms with 1,000,000 queued rows).
                    server_settings={"plan_cache_mode": "force_generic_plan", "jit": "off"},
                )
                try:
                    async with pool.acquire() as conn:
                        await migrate(conn, self._names)  # type: ignore[arg-type]  # pool proxy
                except BaseException:
                    pool.terminate()
                    raise
            self._pool_obj = pool

    def _connected(self) -> bool:
        return self._pool_obj is not None

    async def _pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool_obj is None:
            await self.connect()
        assert self._pool_obj is not None
        return self._pool_obj

    async def aclose(self) -> None:
        """Close the listener and the pool; unsettled deliveries come back after their lease.

        Blocked receives return empty and result waits return None. A later
        call opens connections again.
        """
        self._generation += 1
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        await self._listener.aclose()
        pool, self._pool_obj = self._pool_obj, None
        if pool is not None:
            try:
                async with asyncio.timeout(5.0):  # not wait_for: it can swallow a cancel
                    await pool.close()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    async def __aenter__(self) -> PostgresBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @asynccontextmanager
    async def _io(self, what: str) -> AsyncIterator[None]:
        """`bounded` for one operation; on connection trouble, start over with a new pool.

        A statement that timed out (`command_timeout`) may have hit a
        connection that died without closing, and the idle connections opened
        before it may be just as dead: handed out for the next settle, each
        would stall it for another timeout while leases run out. The pool in
        use is terminated, so the next call connects afresh.
        """
        pool = self._pool_obj
        try:
            async with bounded(self._where, what, self._deadline):
                yield
        except BrokerUnavailable:
            if pool is not None and self._pool_obj is pool:
                self._pool_obj = None
                pool.terminate()
            raise

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- enqueue -------------------------------------------------------------

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Insert every envelope in one statement and notify each queue once.

        An id not yet settled (queued, scheduled or held) is left as it is: the
        id is the primary key, and a settled job's row is gone, so its id is
        free again.
        """
        if envelopes:
            args = enqueue_arguments(envelopes, self._names.jobs_channel)
            async with self._io("enqueue"):
                await (await self._pool()).fetch(self._q.enqueue, *args)

    async def enqueue_in_transaction(
        self, connection: object, envelopes: Sequence[Envelope]
    ) -> None:
        """`enqueue_many` on the caller's asyncpg connection, in its open transaction.

        The jobs exist (and the notification goes out) only if it commits.
        """
        if not isinstance(connection, asyncpg.Connection | PoolConnectionProxy):
            raise ConfigurationError(
                "a transactional enqueue on PostgreSQL takes an asyncpg connection"
                f" (plain or pooled), not {type(connection).__name__}"
            )
        if envelopes:
            args = enqueue_arguments(envelopes, self._names.jobs_channel)
            async with self._io("enqueue"):
                await connection.fetch(self._q.enqueue, *args)

    # -- receive -------------------------------------------------------------

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Take up to `limit` due jobs, blocking up to `wait` s."""
        names = list(dict.fromkeys(queues))
        if not names or limit <= 0:
            return []
        generation, wakes = self._generation, self._wakes  # before any await: none is missed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if wait <= 0:
            return (await self._take(names, limit, lease))[0]
        await self._listener.ensure()
        # A due row skipped because someone holds a row lock on it (a
        # concurrent taker, for a moment): look again soon, backing off so a
        # long lock is no spin.
        locked = Backoff(first=0.01, cap=max(self.options.lease_recovery_interval, 0.01))
        with self._listener.watching_queues(names) as waiter:
            while True:
                got, next_in = await self._take(names, limit, lease)
                left = deadline - loop.time()
                if got or left <= 0 or (generation, wakes) != (self._generation, self._wakes):
                    return got
                nap = min(left, self.options.lease_recovery_interval)
                if next_in is not None and next_in <= 0:  # a due row is locked
                    nap = min(nap, next(locked) + 0.002)
                elif next_in is not None:
                    locked.reset()
                    nap = min(nap, max(next_in, locked.first) + 0.002)
                await self._listener.ensure()
                await waiter.wait(nap)
                if (generation, wakes) != (self._generation, self._wakes):
                    return []

    async def wake_receivers(self) -> None:
        """End the receives in flight early, with what they took (`WakeableReceive`)."""
        self._wakes += 1
        self._listener.wake_queue_waiters()

    async def _take(
        self, names: list[str], limit: int, lease: float
    ) -> tuple[list[Delivery], float | None]:
        token = secrets.randbits(63)
        rows = await self._fetch_take(names, limit, lease, token)
        taken = [r for r in rows if r["id"] is not None]
        if not taken:
            next_in = rows[0]["next_in"] if rows else None
            return [], next_in
        taken.sort(key=lambda r: (r["due_at"], r["seq"]))
        return [
            Delivery(
                Envelope(r["id"], r["queue"], r["body"], 0.0, r["priority"]),
                token,
                redelivered=r["hand_outs"] > 1,
                deliveries=r["hand_outs"],
            )
            for r in taken
        ], None

    async def _fetch_take(
        self, names: list[str], limit: int, lease: float, token: int
    ) -> list[asyncpg.Record]:
        async with self._io("receive"):
            return await (await self._pool()).fetch(self._q.receive, names, limit, lease, token)

    # -- settle and extend ---------------------------------------------------

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Apply the whole batch in one statement (one transaction); LeaseLost per lost item."""
        if not items:
            return []
        batch = SettleBatch(items)
        args = batch.arguments(self._names)
        async with self._io("settle"), self._row_locks:
            rows = await (await self._pool()).fetch(self._q.settle, *args)
        if batch.has_results:
            self._maybe_cleanup()
        return batch.outcomes({(r["kind"], r["id"]) for r in rows})

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
        """Push every live lease to `lease` s from now (server clock), in one statement."""
        if not deliveries:
            return []
        ids = [d.envelope.id for d in deliveries]
        tokens = [d.receipt if isinstance(d.receipt, int) else -1 for d in deliveries]
        async with self._io("extend"), self._row_locks:
            rows = await (await self._pool()).fetch(self._q.extend, ids, tokens, lease)
        kept = {r["id"] for r in rows}
        return [
            None if d.envelope.id in kept else LeaseLost(f"lease lost for job {d.envelope.id}")
            for d in deliveries
        ]

    async def cancel(self, queue: str, job_id: str) -> bool:
        """Delete a queued or scheduled job that no receiver holds; True if it was there."""
        async with self._io("cancel"):
            found = await (await self._pool()).fetchval(self._q.cancel, job_id, queue)
        return found is not None

    # -- results -------------------------------------------------------------

    def reply_address(self) -> str | None:
        """Results live in the results table; waiters hear of them by NOTIFY."""
        return None

    async def put_results(self, writes: Sequence[ResultWrite]) -> None:
        """Upsert each result (ttl > 0) with its expiry and notify its waiters."""
        latest = {w.job_id: w for w in writes if w.ttl > 0}
        if not latest:
            return
        rows = list(latest.values())
        async with self._io("put results"):
            await (await self._pool()).fetch(
                self._q.put_results,
                [w.job_id for w in rows],
                [w.queue for w in rows],
                [w.data for w in rows],
                [w.ttl for w in rows],
                self._names.results_channel,
            )
        self._maybe_cleanup()

    async def get_result(self, job_id: str, *, queue: str, wait: float) -> bytes | None:
        """The unexpired result of `job_id`, waiting up to `wait` s on the shared listener."""
        if wait <= 0:
            return await self._read_result(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        generation = self._generation
        await self._listener.ensure()
        with self._listener.watching_job(job_id) as waiter:
            while True:
                data = await self._read_result(job_id)
                left = deadline - loop.time()
                if data is not None or left <= 0 or generation != self._generation:
                    return data
                await self._listener.ensure()
                await waiter.wait(min(left, self.options.lease_recovery_interval))
                if generation != self._generation:
                    return None

    async def _read_result(self, job_id: str) -> bytes | None:
        async with self._io("get result"):
            data: bytes | None = await (await self._pool()).fetchval(self._q.get_result, job_id)
        return data

    def _maybe_cleanup(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_cleanup:
            self._next_cleanup = now + _CLEANUP_EVERY
            self._spawn(self._cleanup_results())

    async def _cleanup_results(self) -> None:
        # Best effort: a failed sweep is retried at the next interval.
        try:
            pool = await self._pool()
            await pool.execute(self._q.cleanup_results)
        except Exception:
            return
