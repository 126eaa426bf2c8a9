"""Shared state for `SQLiteBroker` (a mixin): the `StateStore` contract in two tables.

Entries are rows of ``upnext_state``, slot members rows of ``upnext_slots``.
A put, an acquire (or a batch of them) or a release is one ``BEGIN
IMMEDIATE`` transaction, so it is atomic against every process using the
file, and a put's writes apply in order. An entry's version is its row's
``AUTOINCREMENT`` id: every write inserts a new row, and SQLite never
reuses an id, even after a delete. TTLs are judged, like leases, by this
host's clock (`time.time()`); reads skip expired rows and every write
transaction first sweeps them away.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from upnext.broker import SlotClaim, SlotGrant, StateEntry, StatePage, StateWrite
from upnext.broker.cursor import parse_state_cursor, state_cursor

from upnext_sqlite import schema
from upnext_sqlite._db import Database

__all__ = ["StateMixin", "prefix_end"]


def _scope(scope: str | None) -> str:
    # '' for none and '/' before a scope, so the empty scope is not "no scope".
    return "" if scope is None else "/" + scope


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (None: there is none).

    SQLite compares text by its UTF-8 bytes, i.e. by code point, so the keys
    under a prefix are the index range ``[prefix, prefix_end(prefix))``.
    """
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return None  # every string >= prefix starts with it
    after = ord(stem[-1]) + 1
    if 0xD800 <= after <= 0xDFFF:  # surrogates never occur in a UTF-8 key
        after = 0xE000
    return stem[:-1] + chr(after)


def _holds(row: Any, expect: object) -> bool:
    """Whether the live row (or None) meets a write's `expect`."""
    if expect == "any":
        return True
    if expect == "absent":
        return row is None
    return row is not None and row[1] == expect


def _put(conn: sqlite3.Connection, scope: str, writes: Sequence[StateWrite]) -> list[bool]:
    now = time.time()
    conn.execute(schema.STATE_SWEEP, (now,))
    applied = []
    for w in writes:
        ok = _holds(conn.execute(schema.STATE_GET, (scope, w.key, now)).fetchone(), w.expect)
        if ok and w.value is None:
            conn.execute(schema.STATE_DELETE, (scope, w.key))
        elif ok:
            expires = None if w.ttl is None else now + w.ttl
            conn.execute(schema.STATE_SET, (scope, w.key, w.value, expires))
        applied.append(ok)
    return applied


def _acquire(
    conn: sqlite3.Connection, slot: tuple[str, str], member: str, limit: int | None, ttl: float
) -> SlotGrant:
    now = time.time()
    conn.execute(schema.SLOTS_SWEEP, (now,))
    count, earliest, held = conn.execute(schema.SLOTS_COUNT, (member, *slot)).fetchone()
    if held or limit is None or count < limit:
        conn.execute(schema.SLOTS_TAKE, (*slot, member, now + ttl))
        return SlotGrant(True, count if held else count + 1)
    return SlotGrant(False, count, max(earliest - now, 0.0))


class StateMixin:
    """`StateStore` over the broker's database."""

    _db: Database

    async def state_get(
        self, keys: Sequence[str], *, scope: str | None = None
    ) -> list[StateEntry | None]:
        """The live entry of each key, in order; None where there is none."""

        def get(conn: sqlite3.Connection) -> list[StateEntry | None]:
            now, in_scope = time.time(), _scope(scope)
            rows = [conn.execute(schema.STATE_GET, (in_scope, k, now)).fetchone() for k in keys]
            return [None if r is None else StateEntry(bytes(r[0]), r[1]) for r in rows]

        return await self._db.query(get)

    async def state_put(
        self, writes: Sequence[StateWrite], *, scope: str | None = None
    ) -> list[bool]:
        """Apply each write whose `expect` holds, in order, in one transaction."""
        return await self._db.write(lambda c: _put(c, _scope(scope), writes)) if writes else []

    async def state_scan(
        self,
        prefix: str,
        *,
        scope: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> StatePage:
        """Live entries under `prefix` in key order, `limit` a page."""
        after = None if cursor is None else parse_state_cursor(cursor)
        if after is not None and after >= prefix:
            where, args = ["key > ?"], [after]
        else:
            where, args = ["key >= ?"], [prefix]
        if (end := prefix_end(prefix)) is not None:
            where.append("key < ?")
            args.append(end)
        sql = schema.STATE_SCAN.format(range=" AND ".join(where))
        limit = max(limit, 0)  # one row more than a page: is there a next one?

        def scan(conn: sqlite3.Connection) -> list[Any]:
            # The clock is read on the thread, just before the rows are.
            return conn.execute(sql, (_scope(scope), *args, time.time(), limit + 1)).fetchall()

        rows = await self._db.query(scan)
        entries = [(str(k), StateEntry(bytes(v), version)) for k, v, version in rows[:limit]]
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
        slot = (_scope(scope), key)
        return await self._db.write(lambda c: _acquire(c, slot, member, limit, ttl))

    async def slots_acquire_many(self, claims: Sequence[SlotClaim]) -> list[SlotGrant]:
        """`slots_acquire` for each claim, in order, in one transaction."""

        def acquire(c: sqlite3.Connection) -> list[SlotGrant]:
            return [_acquire(c, (_scope(s.scope), s.key), s.member, s.limit, s.ttl) for s in claims]

        return await self._db.write(acquire) if claims else []

    async def slots_release(
        self, key: str, members: Sequence[str], *, scope: str | None = None
    ) -> None:
        """Free the slots these members hold; others are ignored."""
        rows = [(_scope(scope), key, m) for m in members]
        await self._db.write(lambda c: c.executemany(schema.SLOTS_RELEASE, rows))
