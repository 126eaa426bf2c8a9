"""One sqlite3 connection on a thread of its own, driven from any event loop.

Every statement runs on the broker's single worker thread, so the connection
never changes threads, and calls from several event loops (core's sync twins
use a background loop) queue up in order. Driver errors are mapped here, at
the boundary: a locked, missing or unreadable file is `BrokerUnavailable`,
anything else `BrokerError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from upnext.errors import BrokerError, BrokerUnavailable

from upnext_sqlite._wake import Bell
from upnext_sqlite.schema import SCHEMA, upgrade

T = TypeVar("T")
Statements = Callable[[sqlite3.Connection], T]


class Database:
    """A WAL-mode SQLite file behind one thread."""

    def __init__(self, path: str, *, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: we say BEGIN IMMEDIATE ourselves, so a take or a
        # settle holds the write lock from its first read to its commit.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            self._wal(conn)
            conn.execute("PRAGMA synchronous=FULL")  # durable on return, power loss included
            conn.executescript(SCHEMA)  # all IF NOT EXISTS: racing processes all succeed
            upgrade(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        # Two processes opening a new file switch it to WAL at once: SQLite may
        # answer "database is locked" without waiting on the busy timeout, so
        # try again until that timeout has passed.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    async def close(self) -> None:
        """Close the connection and stop the thread (idempotent)."""
        executor = self._executor
        if executor is not None:
            await self.run(lambda: self._conn.close() if self._conn else None)
            self._conn = self._executor = None
            executor.shutdown(wait=False)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue `fn` on the connection's thread, its errors mapped."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="upnext-sqlite")
        return self._executor.submit(self._guard, fn)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the connection's thread and await its result."""
        return await asyncio.wrap_future(self.submit(fn))

    def _guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:  # locked, missing or unreadable: unavailable
            kind = BrokerUnavailable if isinstance(exc, sqlite3.OperationalError) else BrokerError
            raise kind(f"sqlite {self.path}: {exc}") from exc

    def connection(self) -> sqlite3.Connection:
        """On the thread: the connection, opened on first use (after `close()` too).

        Like the in-tree backends, a closed broker opens again when used; the
        semantic suite relies on it.
        """
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def tx(self, fn: Statements[T], *ring: Bell) -> T:
        """On the thread: `fn` in one immediate transaction; once committed, ring `ring`."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        with conn:  # commits, or rolls back on any error
            out = fn(conn)
        for bell in ring:
            bell.ring()
        return out

    async def write(self, fn: Statements[T], *ring: Bell) -> T:
        """Run `fn` in one immediate transaction; once committed, ring `ring`."""
        return await self.run(lambda: self.tx(fn, *ring))

    async def query(self, fn: Statements[T]) -> T:
        """Run the read-only `fn` on the thread, outside a write transaction."""
        return await self.run(lambda: fn(self.connection()))

    async def rows(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """The rows of one read-only statement."""
        return await self.query(lambda c: c.execute(sql, args).fetchall())

    async def changes(self, sql: str, args: Sequence[object] = ()) -> int:
        """How many rows one statement, in its own transaction, changed."""
        return await self.write(lambda c: c.execute(sql, args).rowcount)
