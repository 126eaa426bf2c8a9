"""Cleaning the shared servers between runs: only what the benchmark itself created.

Redis: the benchmark owns one database number (13 by default) and flushes only it.
RabbitMQ: each runner names the queues and exchanges it declared; only those go.
PostgreSQL: each framework keeps its tables in its own schema, dropped whole.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

__all__ = [
    "POSTGRES_DSN",
    "RABBIT_URL",
    "REDIS_URL",
    "clean_rabbit",
    "create_schema",
    "drop_schema",
    "flush_redis",
]

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
RABBIT_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def flush_redis(url: str = REDIS_URL) -> None:
    """Empty the benchmark's own Redis database (never database 0)."""
    import redis

    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    if int(db) == 0:
        raise SystemExit(f"refusing to flush database 0 of {url}: give the benchmark its own")
    client.flushdb()
    client.close()


def drop_schema(schema: str, dsn: str = POSTGRES_DSN) -> None:
    """Drop one framework's schema with everything in it."""
    import psycopg  # type: ignore[import-not-found, unused-ignore]

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type, unused-ignore]


def clean_rabbit(
    queues: Sequence[str], exchanges: Sequence[str] = (), url: str = RABBIT_URL
) -> None:
    """Delete the named queues and exchanges (missing ones are fine)."""
    asyncio.run(_clean_rabbit(queues, exchanges, url))


async def _clean_rabbit(queues: Sequence[str], exchanges: Sequence[str], url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        for name in queues:
            # A channel closes on the first missing-queue error, so one per name.
            channel = await connection.channel()
            await channel.queue_delete(name)
            await channel.close()
        for name in exchanges:
            channel = await connection.channel()
            await channel.exchange_delete(name)
            await channel.close()


def create_schema(schema: str, dsn: str = POSTGRES_DSN) -> None:
    """Create one framework's (empty) schema."""
    import psycopg  # type: ignore[import-not-found, unused-ignore]

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')  # type: ignore[arg-type, unused-ignore]
