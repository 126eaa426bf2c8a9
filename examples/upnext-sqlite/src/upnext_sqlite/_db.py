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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from upnext.errors import BrokerError, BrokerUnavailable

from upnext_sqlite._wake import Bell
from upnext_sqlite.schema import SCHEMA

T = TypeVar("T")
Statements = Callable[[sqlite3.Connection], T]


class Database:
    """A WAL-mode SQLite file behind one thread."""

    def __init__(self, path: str, *, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open the file and create the tables (idempotent)."""
        await self.run(self._connection)

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: we say BEGIN IMMEDIATE ourselves, so a take or a
        # settle holds the write lock from its first read to its commit.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # durable on return, power loss included
            conn.executescript(SCHEMA)  # all IF NOT EXISTS: racing processes all succeed
        except BaseException:
            conn.close()
            raise
        return conn

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
        except sqlite3.OperationalError as exc:
            raise BrokerUnavailable(f"sqlite {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise BrokerError(f"sqlite {self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        # Opened on first use, after close() too: like the in-tree backends, a
        # closed broker opens again when used (the suite relies on it).
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def tx(self, fn: Statements[T], *ring: Bell) -> T:
        """On the thread: `fn` in one immediate transaction; once committed, ring `ring`."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        for bell in ring:
            bell.ring()
        return out

    async def write(self, fn: Statements[T], *ring: Bell) -> T:
        """Run `fn` in one immediate transaction; once committed, ring `ring`."""
        return await self.run(lambda: self.tx(fn, *ring))

    def read(self, fn: Statements[T]) -> T:
        """On the thread: `fn` outside a write transaction (autocommit reads)."""
        return fn(self._connection())

    async def query(self, fn: Statements[T]) -> T:
        """Run the read-only `fn` on the thread."""
        return await self.run(lambda: self.read(fn))
