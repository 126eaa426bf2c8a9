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
import random
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, ConnectionPool

__all__ = ["Wire", "exchange", "pack", "pack_args", "read_replies", "send"]

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
    before use.
    """

    def __init__(self, pool: ConnectionPool, retries: int) -> None:
        self._pool = pool
        self._retries = retries
        self._free: list[AbstractConnection] = []

    async def run(self, commands: Sequence[bytes]) -> list[Any]:
        """Send `commands` in one write; their replies in order (errors as values).

        A lost connection is retried with exponential backoff and jitter, up
        to `retries` times; then the driver error propagates.
        """
        attempt = 0
        while True:
            try:
                return await self._once(commands)
            except _RETRIABLE:
                if attempt >= self._retries:
                    raise
                attempt += 1
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt) * (0.5 + random.random() / 2))

    async def take(self) -> AbstractConnection:
        """A connected connection of this wire's own (release it with `give`)."""
        if self._free:
            conn = self._free.pop()
        else:
            conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]  # untyped upstream
            _raise_if_cancelled()
        try:
            reader = getattr(conn, "_reader", None)
            if reader is not None and (reader.at_eof() or reader._buffer):
                # Closed by the server (or, never by us, left with data): start afresh.
                await conn.disconnect(nowait=True)
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]  # untyped upstream
                _raise_if_cancelled()
        except BaseException:
            await conn.disconnect(nowait=True)
            self._free.append(conn)
            raise
        return conn

    def give(self, conn: AbstractConnection) -> None:
        """Put back a connection taken with `take` (all its replies read, or disconnected)."""
        self._free.append(conn)

    async def _once(self, commands: Sequence[bytes]) -> list[Any]:
        conn = await self.take()
        try:
            return await exchange(conn, b"".join(commands), len(commands))
        except BaseException:
            # A half-read reply stream must never reach the next user.
            await conn.disconnect(nowait=True)
            raise
        finally:
            self._free.append(conn)

    async def aclose(self) -> None:
        """Forget the free list (the pool disconnects every connection)."""
        self._free.clear()


async def exchange(conn: AbstractConnection, data: bytes, replies: int) -> list[Any]:
    """Write `data` on a connected `conn` and read `replies` replies (errors as values)."""
    writer = conn._writer
    if writer is None:
        raise rx.ConnectionError("connection closed before sending")
    writer.write(data)
    timeout = conn.socket_timeout
    async with asyncio.timeout(timeout):
        if writer.transport.get_write_buffer_size():
            await writer.drain()
        return await read_replies(conn, replies)


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
