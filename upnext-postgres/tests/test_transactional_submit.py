"""Transactional enqueue through the public API: `task.options(connection=conn).submit()`."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import upnext


def _worker(pg_url: str, queue: str) -> tuple[upnext.Worker, Any]:
    worker = upnext.Worker(queue, broker=pg_url)

    @worker.task(name=f"{queue}.double")
    async def double(x: int) -> int:
        return 2 * x

    return worker, double


async def test_submit_in_a_committed_transaction_runs(pg_url: str, upnext_queue: str) -> None:
    """A job submitted on the caller's connection runs once the transaction commits."""
    worker, double = _worker(pg_url, upnext_queue)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(pg_url.split("?")[0])
    try:
        async with conn.transaction():
            future = await double.options(connection=conn).submit(x=21)
        async with worker:
            assert await future.value(timeout=10.0) == 42
    finally:
        await conn.close()
        await worker.aclose()


async def test_submit_in_a_rolled_back_transaction_never_exists(
    pg_url: str, upnext_queue: str
) -> None:
    """A job submitted in a transaction that rolls back is never run and leaves nothing."""
    worker, double = _worker(pg_url, upnext_queue)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(pg_url.split("?")[0])
    try:
        tx = conn.transaction()
        await tx.start()
        future = await double.options(connection=conn).submit(x=1)
        await tx.rollback()
        async with worker:
            with pytest.raises(upnext.WaitTimeout):
                await future.result(timeout=0.5)
            broker: Any = (await worker.client()).broker
            stats = await broker.stats(upnext_queue)
            assert (stats.ready, stats.scheduled, stats.in_flight) == (0, 0, 0)
    finally:
        await conn.close()
        await worker.aclose()


async def test_memory_broker_refuses_a_connection() -> None:
    """A broker without transactional_enqueue refuses `connection=` instead of ignoring it."""
    worker = upnext.Worker("tx-memory", broker="memory://tx-refused")

    @worker.task
    async def noop() -> None: ...

    with pytest.raises(upnext.UnsupportedOperation):
        await noop.options(connection=object()).submit()


async def test_a_connection_that_is_not_asyncpg_is_refused_by_name(
    pg_url: str, upnext_queue: str
) -> None:
    """`connection=` of another driver is a one-line ConfigurationError naming both kinds."""
    worker, double = _worker(pg_url, upnext_queue)
    try:
        with pytest.raises(upnext.ConfigurationError, match=r"asyncpg connection.*not object"):
            await double.options(connection=object()).submit(x=1)
    finally:
        await worker.aclose()


async def test_a_pooled_connection_enqueues_in_its_transaction(
    pg_url: str, upnext_queue: str
) -> None:
    """A pool's connection (asyncpg's proxy) is taken as the caller's own."""
    worker, double = _worker(pg_url, upnext_queue)
    pool = await asyncpg.create_pool(pg_url.split("?")[0], min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            future = await double.options(connection=conn).submit(x=4)
        async with worker:
            assert await future.value(timeout=10.0) == 8
    finally:
        await pool.close()
        await worker.aclose()
