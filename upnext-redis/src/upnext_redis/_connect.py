"""The redis-py clients behind a RedisClient: standalone, Sentinel or Cluster.

Everything here is redis-py's public API: its pools, `Redis.from_pool`,
`Sentinel.master_for`, `RedisCluster`, `Retry`. Each backend gets three
clients with their own connections:

- `commands`: scripts and plain commands, on a `ConnectionPool` of
  `max_connections`, run on lanes (see `_lanes`).
- `blocking`: ``XREAD BLOCK`` (and the RECEIVE piggybacked on it): a
  receiver waiting for work never holds a connection settle needs.
- `listener`: the result listener's pub/sub connection. Its health checks
  are off (the listener pings on its own schedule: redis-py's check would
  read a reply from under it), and so are redis-py's retries (the listener
  reconnects and re-subscribes itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from upnext_redis._config import RedisOptions

__all__ = ["Clients", "build_clients"]

# Redis or RedisCluster: the two share the command methods used here.
AnyRedis = Redis | RedisCluster


def _hiredis_pack(args: tuple[Any, ...]) -> list[bytes]:
    """`args` as one RESP command, packed by hiredis (C) rather than redis-py's Python."""
    first = args[0]
    if isinstance(first, str) and " " in first:  # "SCRIPT LOAD": redis-py splits it too
        args = (*first.split(), *args[1:])
    return [hiredis.pack_command(args)]


class HiredisConnection(Connection):
    """redis-py's connection with hiredis packing every command.

    redis-py 8 packs with hiredis itself when it is installed; 7.x packs in
    Python, at ~2 us per argument, and a settle or enqueue script carries
    several arguments per job (measured in docs/benchmarks.md).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """One command in RESP (see `_hiredis_pack`)."""
        return _hiredis_pack(args)


class HiredisSSLConnection(SSLConnection):
    """`HiredisConnection` over TLS."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """One command in RESP (see `_hiredis_pack`)."""
        return _hiredis_pack(args)


@dataclass(frozen=True, slots=True)
class Clients:
    """The three redis-py clients of one broker (see the module docstring)."""

    commands: AnyRedis
    blocking: AnyRedis
    listener: Redis
    # Sentinel only: the clients that ask the sentinels where the master is.
    sentinels: tuple[Redis, ...] = ()

    async def aclose(self) -> None:
        """Close every client, with its pool."""
        for client in (self.commands, self.blocking, self.listener, *self.sentinels):
            await client.aclose()


def _common(options: RedisOptions) -> dict[str, Any]:
    """Connection settings every client shares."""
    return {
        **options.driver_kwargs,
        "socket_connect_timeout": options.socket_connect_timeout,
        # No read timeout in redis-py: every call has one deadline of its own
        # (RedisClient), reconnects included. With a socket_timeout redis-py
        # would also wrap each send in asyncio.wait_for, a task per send that
        # on Python 3.11 can swallow a cancellation (CPython gh-86296).
        "socket_timeout": None,
        "health_check_interval": options.health_check_interval,
        # Reconnects with exponential backoff and jitter: 0.05 s doubling, at most 1 s.
        "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), options.retries),
        "protocol": 2,
    }


def _listener_settings(options: RedisOptions, name: str) -> dict[str, Any]:
    return {
        **_common(options),
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"{name}-results",
    }


def build_clients(options: RedisOptions, name: str) -> Clients:
    """The clients for `options`; connections open on first use. `name` tags them (CLIENT LIST)."""
    if options.sentinels:
        return _sentinel(options, name)
    if options.cluster:
        return _cluster(options, name)
    common = _common(options)
    tls = options.driver_url.startswith("rediss:")
    common["connection_class"] = HiredisSSLConnection if tls else HiredisConnection
    pool = ConnectionPool.from_url(
        options.driver_url, max_connections=options.max_connections, client_name=name, **common
    )
    block_pool = ConnectionPool.from_url(options.driver_url, client_name=f"{name}-block", **common)
    listener_pool = ConnectionPool.from_url(options.driver_url, **_listener_settings(options, name))
    return Clients(
        Redis.from_pool(pool), Redis.from_pool(block_pool), Redis.from_pool(listener_pool)
    )


def _sentinel(options: RedisOptions, name: str) -> Clients:
    """Clients on the master the sentinels name; each reconnect asks them again."""
    kwargs: dict[str, Any] = dict(parse_url(options.driver_url))
    for key in ("host", "port", "path"):
        kwargs.pop(key, None)
    if kwargs.pop("connection_class", None) is SSLConnection:
        kwargs["ssl"] = True
    sentinel = Sentinel(
        list(options.sentinels),
        sentinel_kwargs={
            "socket_timeout": options.socket_timeout,
            "socket_connect_timeout": options.socket_connect_timeout,
        },
    )

    def master(**settings: Any) -> Redis:
        client: Redis = sentinel.master_for(options.service_name, **{**kwargs, **settings})
        return client

    common = _common(options)
    return Clients(
        master(**common, client_name=name),
        master(**common, client_name=f"{name}-block"),
        master(**_listener_settings(options, name)),
        tuple(sentinel.sentinels),
    )


def _cluster(options: RedisOptions, name: str) -> Clients:
    """Clients on a Redis Cluster, seeded by the URL's node; redis-py keeps the slot map."""
    common = _common(options)
    commands = RedisCluster.from_url(options.driver_url, client_name=name, **common)
    blocking = RedisCluster.from_url(options.driver_url, client_name=f"{name}-block", **common)
    # Pub/sub on any node hears every PUBLISH of the cluster: the seed serves.
    listener = Redis.from_url(options.driver_url, **_listener_settings(options, name))
    return Clients(commands, blocking, listener)
