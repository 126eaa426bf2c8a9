"""Wake-ups: no polling faster than the recovery interval, and a lost LISTEN recovers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from upnext.broker.protocol import Ack, Envelope, ResultWrite
from upnext_postgres import PostgresBroker


@pytest_asyncio.fixture
async def slow_recovery(pg_url: str, url_with: Callable[..., str]) -> AsyncIterator[PostgresBroker]:
    """A broker whose idle receivers look at the table at most every 0.4 s."""
    broker = PostgresBroker.from_url(url_with(pg_url, lease_recovery_interval="0.4"))
    await broker.connect()
    yield broker
    await broker.aclose()


def _count_takes(broker: PostgresBroker, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    real = broker._fetch_take

    async def counting(*args: Any) -> list[asyncpg.Record]:
        calls.append(time.monotonic())
        return await real(*args)

    monkeypatch.setattr(broker, "_fetch_take", counting)
    return calls


async def test_idle_receive_queries_no_faster_than_recovery_interval(
    slow_recovery: PostgresBroker, upnext_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle receive on an empty queue runs one query per recovery interval, no more."""
    calls = _count_takes(slow_recovery, monkeypatch)
    got = await slow_recovery.receive([upnext_queue], limit=10, lease=5.0, wait=1.3)
    assert got == []
    # t=0, 0.4, 0.8, 1.2 (+ one at the deadline at most)
    assert 3 <= len(calls) <= 5, calls


async def test_delayed_notify_arms_a_timer_not_a_poll(
    slow_recovery: PostgresBroker, upnext_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delayed enqueue wakes a blocked receiver at its due time, with no query in between."""
    receiving = asyncio.create_task(
        slow_recovery.receive([upnext_queue], limit=10, lease=5.0, wait=3.0)
    )
    await asyncio.sleep(0.1)
    calls = _count_takes(slow_recovery, monkeypatch)
    start = time.monotonic()
    await slow_recovery.enqueue_many([Envelope(uuid.uuid4().hex, upnext_queue, b"x", 1.0)])
    [got] = await receiving
    elapsed = time.monotonic() - start
    assert 0.95 <= elapsed <= 1.5, elapsed
    # The recovery interval (0.4 s) still bounds each nap; the timer ends the last one.
    assert len(calls) <= 5, calls
    await slow_recovery.settle([Ack(got)])


async def test_lost_listen_connection_recovers(
    pg_broker: PostgresBroker, upnext_queue: str
) -> None:
    """Killing the LISTEN backend wakes receivers; they reconnect and hear new jobs."""
    await pg_broker.receive([upnext_queue], limit=1, lease=5.0, wait=0.05)
    listen_conn = pg_broker._listener._conn
    assert listen_conn is not None
    pool = await pg_broker._pool()
    # Only our own LISTEN backend: other sessions on the shared server are not ours.
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", listen_conn.get_server_pid())
    receiving = asyncio.create_task(pg_broker.receive([upnext_queue], limit=1, lease=5.0, wait=3.0))
    await asyncio.sleep(0.3)
    start = time.monotonic()
    await pg_broker.enqueue_many([Envelope(uuid.uuid4().hex, upnext_queue, b"x")])
    [got] = await receiving
    assert time.monotonic() - start < 0.5
    await pg_broker.settle([Ack(got)])


async def test_row_locked_elsewhere_is_no_spin(
    pg_broker: PostgresBroker, upnext_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due job row-locked by another transaction makes receive back off, not spin."""
    job_id = uuid.uuid4().hex
    await pg_broker.enqueue_many([Envelope(job_id, upnext_queue, b"x")])
    conn = await asyncpg.connect(pg_broker.options.dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                f'SELECT 1 FROM "{pg_broker.options.schema}".jobs WHERE id = $1 FOR UPDATE',
                job_id,
            )
            calls = _count_takes(pg_broker, monkeypatch)
            got = await pg_broker.receive([upnext_queue], limit=1, lease=5.0, wait=1.0)
            assert got == []
            assert len(calls) <= 10, len(calls)
    finally:
        await conn.close()
    [freed] = await pg_broker.receive([upnext_queue], limit=1, lease=5.0, wait=1.0)
    await pg_broker.settle([Ack(freed)])


async def test_aclose_ends_blocked_calls(pg_url: str, upnext_queue: str) -> None:
    """Closing the broker returns blocked receives and waits at once; later calls reopen it."""
    broker = PostgresBroker.from_url(pg_url)
    await broker.connect()
    receiving = asyncio.create_task(broker.receive([upnext_queue], limit=1, lease=5.0, wait=10.0))
    waiting = asyncio.create_task(broker.get_result("nope", queue=upnext_queue, wait=10.0))
    await asyncio.sleep(0.2)
    start = time.monotonic()
    await broker.aclose()
    assert await receiving == []
    assert await waiting is None
    assert time.monotonic() - start < 2.0
    assert await broker.receive([upnext_queue], limit=1, lease=5.0, wait=0.0) == []
    assert await broker.dlq_count(upnext_queue) == 0
    await broker.aclose()


async def test_large_result_batches_notify_every_waiter(
    pg_broker: PostgresBroker, upnext_queue: str
) -> None:
    """600 results in one write (several NOTIFY payloads): each waiter wakes at once."""
    ids = sorted(uuid.uuid4().hex for _ in range(600))
    watched = [ids[0], ids[300], ids[-1]]
    waits = [
        asyncio.create_task(pg_broker.get_result(job_id, queue=upnext_queue, wait=4.0))
        for job_id in watched
    ]
    await asyncio.sleep(0.2)
    start = time.monotonic()
    await pg_broker.put_results(
        [ResultWrite(job_id, upnext_queue, job_id.encode(), 60.0) for job_id in ids]
    )
    assert await asyncio.gather(*waits) == [job_id.encode() for job_id in watched]
    assert time.monotonic() - start < 1.0
