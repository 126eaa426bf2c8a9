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

__all__ = ["Wire", "pack", "send"]

_RETRIABLE = (rx.ConnectionError, rx.TimeoutError, OSError)


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, numbers in decimal)."""
    out = [b"*%d\r\n" % len(args)]
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
    """Sends packed commands on a pooled connection and reads every reply."""

    def __init__(self, pool: ConnectionPool, retries: int) -> None:
        self._pool = pool
        self._retries = retries

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

    async def _once(self, commands: Sequence[bytes]) -> list[Any]:
        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]  # untyped upstream
        try:
            _raise_if_cancelled()
            await send(conn, b"".join(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except rx.ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            # A half-read reply stream must never reach the next user.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await self._pool.release(conn)
