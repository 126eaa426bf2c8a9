"""The `StateStore` of `PostgresBroker`, as a mixin: shared state in two tables.

Each call is one statement, so one round trip: reads and scans are plain
``SELECT``s that skip expired rows; a put, an acquire and a release call the
functions ``state_put``, ``slots_acquire`` and ``slots_release`` (see
`_state_ddl`); a batch of acquires calls ``slots_acquire`` once per claim
from one statement. TTLs are judged by the server's clock.
Expired rows are replaced by the next write of their key, dropped by the next
acquire of their slot key, and otherwise swept in bounded batches at most
once a minute per broker, after a write.

A scope is stored as ``'/' || scope``, and no scope as ``''``: so the empty
scope and no scope stay apart, as every two scopes do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg
from upnext.broker.cursor import parse_state_cursor, state_cursor
from upnext.broker.state import SlotClaim, SlotGrant, StateEntry, StatePage, StateWrite

if TYPE_CHECKING:
    from upnext_postgres.schema import Names

__all__ = ["StateMixin", "prefix_end"]

_SWEEP_EVERY = 60.0  # seconds between sweeps of expired state, per broker


def _scope(scope: str | None) -> str:
    return "" if scope is None else "/" + scope


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`; None if there is none.

    Keys sort by code point (bytewise UTF-8), so a scan of `prefix` is the
    range ``[prefix, prefix_end(prefix))``: one index range, however many
    keys lie beyond it.
    """
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return None  # every string >= prefix starts with it
    after = ord(stem[-1]) + 1
    if 0xD800 <= after <= 0xDFFF:  # surrogates never occur in a UTF-8 key
        after = 0xE000
    return stem[:-1] + chr(after)


class StateMixin:
    """`StateStore` over the broker's pool; errors mapped as every call's are."""

    _names: Names
    _next_state_sweep = 0.0

    async def _pool(self) -> asyncpg.Pool[asyncpg.Record]:
        raise NotImplementedError

    def _io(self, what: str) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        raise NotImplementedError

    async def state_get(
        self, keys: Sequence[str], *, scope: str | None = None
    ) -> list[StateEntry | None]:
        """The live entry of each key, in order; None where there is none."""
        if not keys:
            return []
        sql = f"""SELECT k.i, s.value, s.version
FROM unnest($2::text[]) WITH ORDINALITY AS k(key, i)
JOIN {self._names.state} AS s ON s.scope = $1 AND s.key = k.key
WHERE s.expires_at IS NULL OR s.expires_at > now()"""
        async with self._io("get state"):
            rows = await (await self._pool()).fetch(sql, _scope(scope), list(keys))
        found: list[StateEntry | None] = [None] * len(keys)
        for row in rows:
            found[row["i"] - 1] = StateEntry(row["value"], row["version"])
        return found

    async def state_put(
        self, writes: Sequence[StateWrite], *, scope: str | None = None
    ) -> list[bool]:
        """Apply each write whose `expect` holds, in order; per write, whether it was."""
        if not writes:
            return []
        kinds = [w.expect if isinstance(w.expect, str) else "version" for w in writes]
        args = (
            _scope(scope),
            [w.key for w in writes],
            [w.value for w in writes],
            [w.ttl for w in writes],
            kinds,
            [w.expect if isinstance(w.expect, int) else None for w in writes],
        )
        sql = f"SELECT {self._names.state_put}($1, $2, $3, $4, $5, $6)"
        async with self._io("put state"):
            applied: list[bool] = await (await self._pool()).fetchval(sql, *args)
        self._maybe_sweep_state()
        return applied

    async def state_scan(
        self,
        prefix: str,
        *,
        scope: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> StatePage:
        """Live entries under `prefix` in key order, `limit` a page (one index range)."""
        after = None if cursor is None else parse_state_cursor(cursor)
        start, strict = (after, True) if after is not None and after >= prefix else (prefix, False)
        end = prefix_end(prefix)
        lower = "key > $2" if strict else "key >= $2"
        upper = "key < $4" if end is not None else "$4::text IS NULL"
        sql = f"""SELECT key, value, version FROM {self._names.state}
WHERE scope = $1 AND {lower} AND {upper} AND (expires_at IS NULL OR expires_at > now())
ORDER BY key LIMIT $3"""
        limit = max(limit, 0)
        async with self._io("scan state"):
            rows = await (await self._pool()).fetch(sql, _scope(scope), start, limit + 1, end)
        entries = [(r["key"], StateEntry(r["value"], r["version"])) for r in rows[:limit]]
        more = len(rows) > limit and entries
        return StatePage(entries, state_cursor(entries[-1][0]) if more else None)

    async def slots_acquire(
        self,
        key: str,
        member: str,
        *,
        limit: int | None,
        ttl: float,
        scope: str | None = None,
    ) -> SlotGrant:
        """Take (or refresh) `member`'s slot while fewer than `limit` live members hold one."""
        sql = f"SELECT * FROM {self._names.slots_acquire}($1, $2, $3, $4, $5)"
        async with self._io("acquire slot"):
            row = await (await self._pool()).fetchrow(sql, _scope(scope), key, member, limit, ttl)
        assert row is not None  # a function with OUT parameters returns one row
        self._maybe_sweep_state()
        return SlotGrant(row["o_acquired"], row["o_count"], row["o_retry_after"])

    async def slots_acquire_many(self, claims: Sequence[SlotClaim]) -> list[SlotGrant]:
        """`slots_acquire` for each claim: one statement calling the function per claim."""
        if not claims:
            return []
        # Claims run in (scope, key) order, each key's in call order: concurrent
        # batches take the keys' locks in one order, so they wait, never deadlock.
        order = sorted(range(len(claims)), key=lambda i: (_scope(claims[i].scope), claims[i].key))
        picked = [claims[i] for i in order]
        sql = f"""SELECT a.i, r.* FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[],
    $5::float8[]) WITH ORDINALITY AS a(scope, key, member, lim, ttl, i)
CROSS JOIN LATERAL {self._names.slots_acquire}(a.scope, a.key, a.member, a.lim, a.ttl) AS r
ORDER BY a.i"""
        args = (
            [_scope(c.scope) for c in picked],
            [c.key for c in picked],
            [c.member for c in picked],
            [c.limit for c in picked],
            [c.ttl for c in picked],
        )
        async with self._io("acquire slots"):
            rows = await (await self._pool()).fetch(sql, *args)
        self._maybe_sweep_state()
        grants: list[SlotGrant] = [SlotGrant(False, 0)] * len(claims)
        for row in rows:
            grant = SlotGrant(row["o_acquired"], row["o_count"], row["o_retry_after"])
            grants[order[row["i"] - 1]] = grant
        return grants

    async def slots_release(
        self, key: str, members: Sequence[str], *, scope: str | None = None
    ) -> None:
        """Free the slots these members hold; others are ignored."""
        sql = f"SELECT {self._names.slots_release}($1, $2, $3)"
        async with self._io("release slots"):
            await (await self._pool()).execute(sql, _scope(scope), key, list(members))

    def _maybe_sweep_state(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_state_sweep:
            self._next_state_sweep = now + _SWEEP_EVERY
            self._spawn(self._sweep_state())

    async def _sweep_state(self) -> None:
        # Bounded batches from the expiry indexes. SKIP LOCKED: the sweep never
        # waits for a row lock, so it is never part of a deadlock; and a row a
        # write renewed meanwhile fails the re-checked expiry and is kept.
        n = self._names
        sql = f"""WITH entries AS (
    DELETE FROM {n.state} WHERE expires_at <= now() AND (scope, key) IN (
        SELECT scope, key FROM {n.state} WHERE expires_at <= now()
        LIMIT 5000 FOR UPDATE SKIP LOCKED)
), members AS (
    DELETE FROM {n.state_slots} WHERE expires_at <= now() AND (scope, key, member) IN (
        SELECT scope, key, member FROM {n.state_slots} WHERE expires_at <= now()
        LIMIT 5000 FOR UPDATE SKIP LOCKED)
)
SELECT 1"""
        try:  # best effort: a failed sweep is tried again a minute later
            async with self._io("sweep state"):
                await (await self._pool()).execute(sql)
        except Exception:
            return
