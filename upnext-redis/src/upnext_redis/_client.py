"""Connection pools and script calls shared by the broker, results and DLQ parts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from upnext.errors import BrokerError

from upnext_redis._config import RedisOptions
from upnext_redis._errors import ErrorMapper
from upnext_redis._wire import Wire, pack
from upnext_redis.keys import KeySpace
from upnext_redis.scripts import SCRIPTS, Script

__all__ = ["RedisClient"]

log = logging.getLogger("upnext.redis")

# Policies that may evict keys without TTL (allkeys-*) or results (volatile-*).
_EVICTING = ("allkeys-", "volatile-")

Call = tuple[Script, Sequence[str], Sequence[Any]]


class RedisClient:
    """Two pools (commands, and blocking reads), the key space and script calls.

    Blocking reads get their own pool so a receiver waiting for work never
    holds a connection that settle or enqueue needs.
    """

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        self.keys = KeySpace(options.prefix)
        secrets = (options.password or "", unquote(options.password or ""))
        self.errors = ErrorMapper(options.safe_url, secrets)
        # Names make this object's connections findable in CLIENT LIST.
        self.name = f"upnext-{uuid.uuid4().hex[:8]}"
        retry = Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), options.retries)
        common: dict[str, Any] = {
            **options.driver_kwargs,
            "socket_connect_timeout": options.socket_connect_timeout,
            "health_check_interval": options.health_check_interval,
            "retry": retry,
            "protocol": 2,
        }
        try:
            # Blocking: a burst of callers (a gather of many waits) queues for a
            # connection instead of failing with "Too many connections".
            self.pool = BlockingConnectionPool.from_url(
                options.driver_url,
                socket_timeout=options.socket_timeout,
                max_connections=options.max_connections,
                timeout=options.socket_connect_timeout + options.socket_timeout,
                client_name=self.name,
                **common,
            )
            # A block lasts at most recovery_interval; the read timeout allows for it.
            self.block_pool = ConnectionPool.from_url(
                options.driver_url,
                socket_timeout=options.socket_timeout + options.recovery_interval,
                client_name=f"{self.name}-block",
                **common,
            )
        except (ValueError, rx.RedisError) as exc:
            raise self.errors.error(exc) from None
        self.redis = aioredis.Redis(connection_pool=self.pool)
        # redis-py leaves execute_command untyped; replies are checked where used.
        self.raw: Any = self.redis
        self.blocking = aioredis.Redis(connection_pool=self.block_pool)
        self.wire = Wire(self.pool, options.retries)
        self.block_wire = Wire(self.block_pool, options.retries)

    def new_connection(self) -> AbstractConnection:
        """A connection outside both pools (for the pub/sub listener)."""
        kwargs = dict(self.pool.connection_kwargs)
        # The listener pings on its own schedule; redis-py's check would read
        # a reply from under the listener.
        kwargs["health_check_interval"] = 0
        kwargs["client_name"] = f"{self.name}-results"
        connection: AbstractConnection = self.pool.connection_class(**kwargs)
        return connection

    async def check_server(self) -> None:
        """Ping, load every script, and check the eviction policy."""
        with self.errors.boundary():
            await self.redis.ping()
            pipe: Any = self.redis.pipeline(transaction=False)
            for script in SCRIPTS:
                pipe.execute_command("SCRIPT", "LOAD", script.source)
            await pipe.execute()
            await self._check_policy()

    async def _check_policy(self) -> None:
        try:
            reply = await self.raw.execute_command("CONFIG", "GET", "maxmemory-policy")
        except rx.ResponseError:
            # CONFIG is often renamed or denied on managed Redis; we cannot tell.
            log.info("cannot read maxmemory-policy from %s; make sure it is noeviction", self)
            return
        values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
        policy = values[0].decode() if values and isinstance(values[0], bytes) else ""
        if policy.startswith(_EVICTING):
            message = (
                f"Redis at {self.options.safe_url} has maxmemory-policy {policy}: "
                "it may evict queued jobs or results when memory runs out; "
                "set it to noeviction"
            )
            if self.options.strict:
                raise BrokerError(message + " (refused: strict=true)")
            log.warning(message)

    def __str__(self) -> str:
        return self.options.safe_url

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script by SHA, loading it if the server lost it."""
        (reply,) = await self.eval_many([(script, keys, args)])
        return reply

    async def eval_many(
        self, calls: Sequence[Call], extra: Sequence[Sequence[Any]] = ()
    ) -> list[Any]:
        """Run several scripts (and plain commands) in one pipelined round trip.

        Returns the scripts' replies in order; replies of `extra` commands are
        checked for errors and dropped. A script the server lost (restart,
        SCRIPT FLUSH) is loaded and run again.
        """
        packed = [pack(["EVALSHA", s.sha, len(keys), *keys, *args]) for s, keys, args in calls]
        packed += [pack(command) for command in extra]
        with self.errors.boundary():
            replies = await self.wire.run(packed)
            missing = [i for i, r in enumerate(replies) if isinstance(r, rx.NoScriptError)]
            if missing:
                scripts = {calls[i][0] for i in missing}
                again = await self.wire.run(
                    [pack(["SCRIPT", "LOAD", s.source]) for s in scripts]
                    + [packed[i] for i in missing]
                )
                for i, reply in zip(missing, again[len(scripts) :], strict=True):
                    replies[i] = reply
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies[: len(calls)]

    async def aclose(self) -> None:
        """Close both pools."""
        await self.redis.aclose()
        await self.blocking.aclose()
        await self.pool.disconnect()
        await self.block_pool.disconnect()
