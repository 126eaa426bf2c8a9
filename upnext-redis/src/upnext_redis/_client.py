"""Connection pools and script calls shared by the broker, results and DLQ parts."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from upnext.errors import BrokerError

from upnext_redis._config import RedisOptions
from upnext_redis._errors import ErrorMapper
from upnext_redis._routing import Node, Router
from upnext_redis._wire import pack, pack_args
from upnext_redis.dlq_scripts import DLQ_SCRIPTS
from upnext_redis.keys import KeySpace
from upnext_redis.scripts import SCRIPTS, Script
from upnext_redis.state_scripts import STATE_SCRIPTS

__all__ = ["RedisClient"]

log = logging.getLogger("upnext.redis")

# Policies that may evict keys without TTL (allkeys-*) or results (volatile-*).
_EVICTING = ("allkeys-", "volatile-")

Call = tuple[Script, Sequence[str], Sequence[Any]]


class RedisClient:
    """Pools per server (commands, and blocking reads), the key space and script calls.

    Blocking reads get their own pool so a receiver waiting for work never
    holds a connection that settle or enqueue needs. Every call is routed by
    its first key (see `Router`), so the same code serves Redis Cluster.
    """

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        self.keys = KeySpace(options.prefix)
        self.errors = ErrorMapper(options.url)
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
                max_connections=10_000,
                client_name=f"{self.name}-block",
                **common,
            )
        except (ValueError, rx.RedisError) as exc:
            raise self.errors.error(exc) from None
        seed = Node(self.pool, self.block_pool, options.retries)
        self.router = Router(seed, cluster=options.cluster, retries=options.retries)

    @property
    def cluster(self) -> bool:
        """True on Redis Cluster: one script never spans two queues there."""
        return self.router.cluster

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
        """On every server: ping, load every script, and check the eviction policy."""
        # The first contact is bounded as a whole, retries included: a server
        # that accepts connections and never answers fails on time.
        limit = self.options.socket_connect_timeout + self.options.socket_timeout
        try:
            async with asyncio.timeout(limit):
                await self._check_nodes()
        except TimeoutError:
            raise self.errors.unavailable(TimeoutError(f"no answer within {limit:g}s")) from None

    async def _check_nodes(self) -> None:
        with self.errors.boundary():
            if self.cluster:
                await self.router.refresh()
            commands = [pack(["PING"])] + [
                pack(["SCRIPT", "LOAD", s.source]) for s in (*SCRIPTS, *DLQ_SCRIPTS, *STATE_SCRIPTS)
            ]
            commands.append(pack(["CONFIG", "GET", "maxmemory-policy"]))
            for node in self.router.nodes:
                replies = await node.wire.run(commands)
                for reply in replies[:-1]:
                    if isinstance(reply, Exception):
                        raise reply
                self._check_policy(replies[-1])

    def _check_policy(self, reply: Any) -> None:
        if isinstance(reply, rx.ResponseError):
            # CONFIG is often renamed or denied on managed Redis; we cannot tell.
            log.info("cannot read maxmemory-policy from %s; make sure it is noeviction", self)
            return
        values = list(reply)[1::2]
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

    async def commands(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run plain commands (routed by their first key) in one round trip per server."""
        with self.errors.boundary():
            replies = await self.router.run([(str(c[1]), pack(c)) for c in commands])
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies

    async def eval_many(
        self, calls: Sequence[Call], extra: Sequence[Sequence[Any]] = ()
    ) -> list[Any]:
        """Run several scripts (and plain commands) in one pipelined round trip per server.

        Returns the scripts' replies in order; replies of `extra` commands are
        checked for errors and dropped. A script a server lost (restart,
        SCRIPT FLUSH) is loaded there and run again.
        """
        routed = [
            (keys[0], pack(["EVALSHA", s.sha, len(keys), *keys, *args])) for s, keys, args in calls
        ]
        routed += [(str(command[1]), pack(command)) for command in extra]
        with self.errors.boundary():
            replies = await self.router.run(routed)
            missing = [
                i for i, r in enumerate(replies[: len(calls)]) if isinstance(r, rx.NoScriptError)
            ]
            if missing:
                loads = [
                    (routed[i][0], pack(["SCRIPT", "LOAD", calls[i][0].source])) for i in missing
                ]
                again = await self.router.run(loads + [routed[i] for i in missing])
                for i, reply in zip(missing, again[len(loads) :], strict=True):
                    replies[i] = reply
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies[: len(calls)]

    def script_head(self, script: Script, keys: Sequence[str]) -> tuple[int, bytes]:
        """The fixed part of an EVALSHA of `script` on `keys`: (its argument count, its bytes).

        A caller that sends the same script on the same keys often keeps it
        and sends ``b"*%d\\r\\n" % (count + len(args)) + head + pack_args(args)``.
        """
        fixed = ["EVALSHA", script.sha, len(keys), *keys]
        return len(fixed), pack_args(fixed)

    async def eval_packed(self, script: Script, packed: bytes) -> Any:
        """Run one packed EVALSHA of `script` (standalone Redis), loading it if it was lost."""
        with self.errors.boundary():
            (reply,) = await self.router.seed.wire.run([packed])
            if isinstance(reply, rx.NoScriptError):
                load = pack(["SCRIPT", "LOAD", script.source])
                _, reply = await self.router.seed.wire.run([load, packed])
            if isinstance(reply, Exception):
                raise reply
            return reply

    async def block(self, key: str, command: Sequence[Any]) -> Any:
        """Run a blocking command on the server of `key`, on a connection of its own."""
        with self.errors.boundary():
            node = await self.router.node_for(key)
            (reply,) = await node.block_wire.run([pack(command)])
            if isinstance(reply, Exception):
                raise reply
            return reply

    async def aclose(self) -> None:
        """Close every pool."""
        await self.router.aclose()
