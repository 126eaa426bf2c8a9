"""A lean command path: our own RESP packing, pipelined replies, reconnect with backoff.

redis-py's generic packer costs several microseconds per argument; a settle
of 500 jobs has thousands. Here each argument is one format and a join, and
a whole batch of commands goes out in one write and comes back in one read
loop, on one pooled connection.

Writes go to the connection's stream directly: redis-py wraps its send in
``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation that
arrives as the send completes (CPython gh-86296), so a cancelled receive
would go on blocking. ``asyncio.timeout`` has no such hole. redis-py's
connection handshake (AUTH, SELECT, CLIENT SETNAME) still goes through its
send, so after taking or opening a connection we re-raise a cancellation it
swallowed (the task's `cancelling()` count still shows it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from upnext.broker import Backoff

__all__ = ["Wire", "pack", "pack_args", "read_replies", "send"]

_RETRIABLE = (rx.ConnectionError, rx.TimeoutError, OSError)


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, numbers in decimal)."""
    return b"*%d\r\n" % len(args) + pack_args(args)


def pack_args(args: Sequence[Any]) -> bytes:
    """The bulk strings of `args`, without the array header (see `pack`)."""
    out: list[bytes] = []
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = repr(arg).encode()
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


def _stale(conn: AbstractConnection) -> bool:
    """True if the server closed `conn`, or (never by us) left data on it."""
    reader = getattr(conn, "_reader", None)
    return reader is not None and bool(reader.at_eof() or reader._buffer)


def _raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def send(conn: AbstractConnection, data: bytes) -> None:
    """Write packed commands to `conn`, connecting first if needed."""
    if not conn.is_connected:
        await conn.connect()  # type: ignore[no-untyped-call]  # untyped upstream
    _raise_if_cancelled()
    writer = conn._writer
    if writer is None:
        raise rx.ConnectionError("connection closed before sending")
    writer.write(data)
    async with asyncio.timeout(conn.socket_timeout):
        await writer.drain()


class Wire:
    """Sends packed commands on a pooled connection and reads every reply.

    Connections this wire took from its pool stay with it, on a free list:
    the next call takes one without the pool's checkout (a lock, a timeout
    and a readiness probe per call, most of a round trip's client-side cost).
    Every call reads all its replies or disconnects, so a free connection
    never holds a stale reply; one the server closed meanwhile is reconnected
    before use. Since connections never go back to the pool, a caller that
    finds the free list empty once the wire holds the pool's
    `max_connections` waits for the next one the wire puts back (first come,
    first served), not for the pool.

    A call's read deadline (the connection's `socket_timeout`) is kept in a
    table that one timer checks a few times per timeout while calls are in
    flight, aborting the connection of an overdue call (which then raises
    TimeoutError): an ``asyncio.timeout`` per call cost ~7 us of CPU, a
    quarter of a round trip's client-side cost. A deadline is met within a
    quarter of the timeout (at most 0.25 s) after it passes.
    """

    def __init__(self, pool: ConnectionPool, retries: int) -> None:
        self._pool = pool
        self._retries = retries
        kwargs = pool.connection_kwargs
        # A whole call, reconnects included, ends within one connect and one
        # read timeout: a server that accepts connections and never answers (a
        # frozen host) must not hold a caller in redis-py's handshake retries.
        self.budget = float(kwargs.get("socket_connect_timeout") or 0.0) + float(
            kwargs.get("socket_timeout") or 0.0
        )
        self._free: list[AbstractConnection] = []
        self._limit = pool.max_connections
        self._owned = 0  # connections taken from the pool (they never go back)
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()
        # id(conn) -> (read deadline by the loop's clock, conn): calls in flight.
        self._deadlines: dict[int, tuple[float, AbstractConnection]] = {}
        self._expired: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, commands: Sequence[bytes]) -> list[Any]:
        """Send `commands` in one write; their replies in order (errors as values).

        A lost connection is retried with exponential backoff and jitter, up
        to `retries` times and within `budget` seconds of the call's start;
        then the driver error propagates (a TimeoutError past the budget).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        attempt = 0
        backoff: Backoff | None = None  # made on the first failure: the common call has none
        while True:
            try:
                return await self._once(commands, deadline)
            except _RETRIABLE:
                backoff = backoff or Backoff(first=0.1, cap=1.0, jitter=0.5)
                pause = next(backoff)
                if attempt >= self._retries or loop.time() + pause >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(pause)

    async def take(self, deadline: float | None = None) -> AbstractConnection:
        """A connected connection of this wire's own (release it with `give`).

        Connecting (the pool's wait, redis-py's handshake and its retries)
        ends by `deadline` (the loop's clock; default `budget` from now), or
        raises redis TimeoutError.
        """
        if self._free:
            conn: AbstractConnection | None = self._free.pop()
            if conn is not None and conn.is_connected and not _stale(conn):
                return conn
        else:
            conn = None
        when = asyncio.get_running_loop().time() + self.budget if deadline is None else deadline
        limit = asyncio.timeout_at(when)
        try:
            async with limit:
                if conn is None and self._owned >= self._limit:
                    conn = await self._given_back()
                return await self._connect(conn)
        except TimeoutError:
            if not limit.expired():
                raise
            budget = f"{self.budget:g}s"
            raise rx.TimeoutError(f"no answer within {budget}, reconnects included") from None

    async def _connect(self, conn: AbstractConnection | None) -> AbstractConnection:
        """`conn` (or one from the pool) connected afresh if it is not usable."""
        if conn is None:
            conn = await self._from_pool()
        try:
            if _stale(conn):
                # Closed by the server (or, never by us, left with data): start afresh.
                await conn.disconnect(nowait=True)
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]  # untyped upstream
                _raise_if_cancelled()
        except BaseException:
            await conn.disconnect(nowait=True)
            self.give(conn)
            raise
        return conn

    async def _from_pool(self) -> AbstractConnection:
        self._owned += 1  # counted before the wait, so no more callers queue at the pool
        try:
            conn: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]  # untyped upstream
        except BaseException:
            self._owned -= 1
            raise
        try:
            _raise_if_cancelled()  # one the pool's handshake swallowed (see above)
        except asyncio.CancelledError:
            self.give(conn)  # connected and idle: it stays ours
            raise
        return conn

    async def _given_back(self) -> AbstractConnection:
        """The next connection another call puts back (the wire holds all it may)."""
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give(waiter.result())  # handed over as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def give(self, conn: AbstractConnection) -> None:
        """Put back a connection taken with `take` (all its replies read, or disconnected)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)

    async def _once(self, commands: Sequence[bytes], deadline: float) -> list[Any]:
        conn = await self.take(deadline)
        key = id(conn)
        try:
            writer = conn._writer
            if writer is None:
                raise rx.ConnectionError("connection closed before sending")
            writer.write(b"".join(commands))
            timeout = conn.socket_timeout
            if timeout is not None:
                loop = asyncio.get_running_loop()
                self._deadlines[key] = (min(loop.time() + timeout, deadline), conn)
                if self._timer is None:
                    self._arm(loop, timeout)
            if writer.transport.get_write_buffer_size():
                await writer.drain()
            return await read_replies(conn, len(commands))
        except BaseException as exc:
            # A half-read reply stream must never reach the next user.
            await conn.disconnect(nowait=True)
            if key in self._expired:
                raise rx.TimeoutError(f"no reply within {conn.socket_timeout:g}s") from exc
            raise
        finally:
            self._deadlines.pop(key, None)
            self._expired.discard(key)
            self.give(conn)

    def _arm(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._timer = loop.call_later(min(0.25, timeout / 4), self._check, loop, timeout)

    def _check(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        """Abort the connection of every call past its deadline; re-arm while calls remain."""
        self._timer = None
        now = loop.time()
        for key, (deadline, conn) in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[key]
                self._expired.add(key)
                writer = conn._writer
                if writer is not None:
                    writer.transport.abort()
        if self._deadlines:
            self._arm(loop, timeout)

    async def aclose(self) -> None:
        """Hand the idle connections back to the pool (which then disconnects them all)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        free, self._free = self._free, []
        for conn in free:
            # Back in the pool's books, so a reconnect after aclose can take them again.
            await self._pool.release(conn)
            self._owned -= 1


async def read_replies(conn: AbstractConnection, count: int) -> list[Any]:
    """Read `count` replies from `conn` (error replies as values, not raised)."""
    parser: Any = conn._parser  # redis-py's or hiredis's async parser
    out: list[Any] = []
    for _ in range(count):
        reply = await parser.read_response()
        if isinstance(reply, rx.ConnectionError):
            raise reply
        out.append(reply)
    return out
