"""Command calls on redis-py single-connection clients ("lanes"), at most `size` at once.

redis-py checks a connection out of its pool for every command and back in
after it: a lock, its observability hooks and an event per checkout, ~8 us
of CPU per call here (docs/benchmarks.md), on every receive and settle. A
lane is redis-py's own single-connection client (`Redis.client()`): it keeps
one pooled connection between calls, with redis-py's `Retry`, reconnects and
health checks unchanged. Idle lanes wait in a list for the next call.

- A plain command is the lane's `execute_command` (redis-py's reply callbacks
  apply).
- A script (``EVALSHA``: redis-py has no reply callback for it) and the
  blocking ``XREAD`` with the script behind it are sent and read on the lane's
  connection with its public `send_command`/`send_packed_command` and
  `read_response`, inside the connection's `Retry`, which disconnects before
  each retry as `execute_command` does. Cancelled or failed mid-way, redis-py
  drops the connection, so no reply is ever left for the next call.
- Pipelines (batches of several commands) still check a connection out of
  the pool. The pool holds `size` connections, so a pipeline that finds it
  full retires an idle lane first, giving its connection back: lanes plus
  pipelines in flight never exceed `size`, and callers beyond `size` queue on
  a semaphore, first come first served.

On Redis Cluster redis-py routes each command to its node's pool: commands
run on the cluster client itself, no lanes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

__all__ = ["Lanes"]


class Lanes:
    """Run commands and pipelines on `client`, at most `size` at a time."""

    def __init__(self, client: Redis | RedisCluster, size: int) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.size = size
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Redis] = []
        self._lanes = 0  # lanes alive, idle or busy: each holds a pooled connection
        self._pipelines = 0  # pipelines in flight: each holds a pooled connection

    def _take(self) -> Redis:
        """An idle lane, or a new one (its connection is checked out on first use)."""
        if self._idle:
            return self._idle.pop()
        assert isinstance(self.client, Redis)
        self._lanes += 1
        return self.client.client()

    async def run(self, *command: Any, **options: Any) -> Any:
        """`command` on a lane (on Cluster: on the cluster client, with `options`); its reply."""
        async with self._slots:
            if self.cluster:
                cluster: Callable[..., Awaitable[Any]] = self.client.execute_command
                return await cluster(*command, **options)
            lane = self._take()
            try:
                # redis-py leaves execute_command unannotated: typed here.
                execute: Callable[..., Awaitable[Any]] = lane.execute_command
                return await execute(*command, **options)
            finally:
                self._idle.append(lane)

    async def script(self, *command: Any) -> Any:
        """An ``EVALSHA`` sent and read on a lane's connection (see the module docstring)."""
        if self.cluster:
            return await self.run(*command)
        return await self._on_connection(lambda conn: _send_read(conn, command))

    async def exchange(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """`commands` in one write on a lane's connection; replies in order, errors as values.

        For the blocking ``XREAD`` and the script behind it: a redis-py pipeline
        would check a connection out and back in around every block.
        """
        replies: list[Any] = await self._on_connection(lambda conn: _exchange(conn, commands))
        return replies

    async def _on_connection(self, call: Callable[[Connection], Awaitable[Any]]) -> Any:
        """`call(connection)` on a lane's connection, inside the connection's Retry."""
        async with self._slots:
            lane = self._take()
            try:
                conn = lane.connection or (await lane.initialize()).connection
                assert conn is not None  # a single-connection client has one once initialized

                async def drop(_: Exception) -> None:
                    await conn.disconnect()

                return await conn.retry.call_with_retry(lambda: call(conn), drop)
            finally:
                self._idle.append(lane)

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """`commands` in one non-transactional pipeline: replies in order, errors as values."""
        async with self._slots:
            self._pipelines += 1
            try:
                if self._lanes + self._pipelines > self.size and self._idle:
                    await self._retire(self._idle.pop())
                pipe = self.client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
                return replies
            finally:
                self._pipelines -= 1

    async def _retire(self, lane: Redis) -> None:
        """Close `lane`: its connection goes back to the pool, still open."""
        self._lanes -= 1
        await lane.aclose(close_connection_pool=False)

    async def aclose(self) -> None:
        """Retire every idle lane (busy ones are being closed by their callers' errors)."""
        while self._idle:
            await self._retire(self._idle.pop())


async def _send_read(conn: Connection, command: Sequence[Any]) -> Any:
    await conn.send_command(*command)
    return await conn.read_response()


async def _exchange(conn: Connection, commands: Sequence[Sequence[Any]]) -> list[Any]:
    await conn.send_packed_command(conn.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # the whole error reply was read
            replies.append(exc)
    return replies
