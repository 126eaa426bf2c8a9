"""The brokers a chaos run can target: loopback URLs, a private namespace each, and cleanup.

Redis gets its own key prefix, PostgreSQL its own schema, RabbitMQ its own
queue name; all three are removed after the run. Only loopback hosts are ever
accepted: the suite breaks things, so it must never point at a real server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

import pytest

__all__ = [
    "BACKENDS",
    "Backend",
    "base_url",
    "cleanup",
    "make_backend",
    "require_loopback",
    "server_address",
    "through",
]

BACKENDS = ("redis", "rabbitmq", "postgres")

_ENV = {
    "redis": ("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "rabbitmq": ("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    "postgres": ("UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
}
_PORTS = {"redis": 6379, "amqp": 5672, "postgresql": 5432}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True, slots=True)
class Backend:
    """One broker for one run: `url` carries the run's private namespace; `queue` is unique."""

    name: str
    base: str
    url: str
    queue: str
    token: str


def require_loopback(url: str) -> None:
    """Refuse any URL whose host is not a loopback address."""
    host = urlsplit(url).hostname or ""
    if host not in _LOOPBACK:
        raise ValueError(f"chaos tests only target loopback hosts, not {host!r}")


def base_url(name: str) -> str:
    """The server URL for backend `name` (env override or the loopback default)."""
    env, default = _ENV[name]
    url = os.environ.get(env, default)
    require_loopback(url)
    return url


def _with_option(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


def _require_service(url: str) -> None:
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or _PORTS.get(parts.scheme, 0)), 2
        ).close()
    except OSError:
        message = f"no server for {parts.scheme} on loopback: start it (docker compose up -d)"
        if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)


def make_backend(name: str) -> Backend:
    """A fresh namespace on backend `name`; skips (or fails under CI) when it is unreachable."""
    token = uuid.uuid4().hex[:10]
    if name == "memory":  # in-process only: a URL of its own in the per-process registry
        url = f"memory://chaos-{token}"
        return Backend(name=name, base=url, url=url, queue=f"chaos-{token}", token=token)
    base = base_url(name)
    _require_service(base)
    url = base
    if name == "redis":
        url = _with_option(base, "prefix", f"chaos-{token}")
    elif name == "postgres":
        url = _with_option(base, "schema", f"chaos_{token}")
    elif name == "rabbitmq":  # an admin anywhere that scans every DLQ holds ours meanwhile
        url = _with_option(base, "dlq_busy_wait", "30")
    return Backend(name=name, base=base, url=url, queue=f"chaos-{token}", token=token)


async def cleanup(backend: Backend) -> None:
    """Remove everything the run left on the server (keys, schema or queues)."""
    if backend.name == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(backend.base.partition("?")[0])
        try:
            keys = [k async for k in client.scan_iter(match=f"chaos-{backend.token}:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()
    elif backend.name == "postgres":
        import asyncpg

        conn = await asyncpg.connect(backend.base.partition("?")[0])
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "chaos_{backend.token}" CASCADE')
        finally:
            await conn.close()
    elif backend.name == "rabbitmq":
        import aio_pika
        from upnext_rabbitmq.topology import amqp_queues

        connection = await aio_pika.connect(backend.base)
        try:
            channel = await connection.channel()
            for queue in amqp_queues(backend.queue):  # work, DLQ and delay levels
                await channel.queue_delete(queue)
        finally:
            await connection.close()
            await asyncio.sleep(0.05)  # aiormq's close callbacks run as tasks: let them finish


def through(backend: Backend, port: int) -> Backend:
    """`backend` with its URL pointing at 127.0.0.1:`port` (a proxy); cleanup still goes direct."""
    parts = urlsplit(backend.url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return replace(backend, url=urlunsplit(parts._replace(netloc=netloc)))


def server_address(backend: Backend) -> tuple[str, int]:
    """The host and port of the real server behind `backend` (what a proxy forwards to)."""
    parts = urlsplit(backend.base)
    return parts.hostname or "127.0.0.1", parts.port or _PORTS[parts.scheme]
