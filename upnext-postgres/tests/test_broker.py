"""What the conformance suite cannot see: SQL, transactions, indexes, wake-ups."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest_asyncio
from upnext.broker.protocol import (
    Ack,
    DeadLetter,
    DeadLetterRecord,
    Envelope,
    ResultWrite,
)
from upnext_postgres import PostgresBroker


@pytest_asyncio.fixture
async def conn(pg_broker: PostgresBroker, pg_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A plain asyncpg connection of the test's own (the broker's schema exists)."""
    connection = await asyncpg.connect(pg_broker.options.dsn)
    yield connection
    await connection.close()


def _jobs(broker: PostgresBroker) -> str:
    return f'"{broker.options.schema}".jobs'


async def test_transactional_enqueue_commit(
    pg_broker: PostgresBroker, conn: asyncpg.Connection[Any], upnext_queue: str
) -> None:
    """A job enqueued on the caller's connection appears when its transaction commits."""
    envelope = Envelope(uuid.uuid4().hex, upnext_queue, b"in-tx")
    async with conn.transaction():
        await pg_broker.enqueue_in_transaction(conn, [envelope])
        assert await pg_broker.receive([upnext_queue], limit=5, lease=5.0, wait=0.0) == []
    got = await pg_broker.receive([upnext_queue], limit=5, lease=5.0, wait=2.0)
    assert [d.envelope.body for d in got] == [b"in-tx"]
    await pg_broker.settle([Ack(d) for d in got])


async def test_transactional_enqueue_rollback(
    pg_broker: PostgresBroker, conn: asyncpg.Connection[Any], upnext_queue: str
) -> None:
    """A job enqueued in a transaction that rolls back never exists, and wakes no one."""
    receiving = asyncio.create_task(pg_broker.receive([upnext_queue], limit=5, lease=5.0, wait=0.6))
    await asyncio.sleep(0.1)
    tx = conn.transaction()
    await tx.start()
    await pg_broker.enqueue_in_transaction(
        conn, [Envelope(uuid.uuid4().hex, upnext_queue, b"gone")]
    )
    await tx.rollback()
    assert await receiving == []
    assert (await pg_broker.stats(upnext_queue)).ready == 0


async def test_ack_deletes_the_row(pg_broker: PostgresBroker, upnext_queue: str) -> None:
    """Completed jobs do not accumulate: Ack (with a result) deletes the job row."""
    envelopes = [Envelope(uuid.uuid4().hex, upnext_queue, b"x") for _ in range(5)]
    await pg_broker.enqueue_many(envelopes)
    got = await pg_broker.receive([upnext_queue], limit=5, lease=5.0, wait=2.0)
    writes = [ResultWrite(d.envelope.id, upnext_queue, b"ok", 60.0) for d in got]
    await pg_broker.settle([Ack(d, w) for d, w in zip(got, writes, strict=True)])
    pool = await pg_broker._pool()
    sql = f"SELECT count(*) FROM {_jobs(pg_broker)} WHERE queue = $1"
    assert await pool.fetchval(sql, upnext_queue) == 0


async def test_malformed_row_is_delivered_as_is(
    pg_broker: PostgresBroker, conn: asyncpg.Connection[Any], upnext_queue: str
) -> None:
    """A row inserted straight into the table (garbage body) is handed out unchanged."""
    job_id = uuid.uuid4().hex
    await conn.execute(
        f"INSERT INTO {_jobs(pg_broker)} (id, queue, body) VALUES ($1, $2, $3)",
        job_id,
        upnext_queue,
        b"\xff\x00not json",
    )
    [got] = await pg_broker.receive([upnext_queue], limit=5, lease=5.0, wait=2.0)
    assert (got.envelope.id, got.envelope.body) == (job_id, b"\xff\x00not json")
    record = DeadLetterRecord("e-" + job_id, job_id, upnext_queue, "?", "undecodable", 1.0, b"")
    assert await pg_broker.settle([DeadLetter(got, record)]) == [None]
    assert (await pg_broker.dlq_get(record.id)).reason == "undecodable"


async def _generic_plan(conn: asyncpg.Connection[Any], sql: str, *literals: str) -> str:
    """The plan the broker's pool runs (it forces generic plans), via PREPARE/EXECUTE."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE upnext_plan AS {sql}")
    try:
        rows = await conn.fetch(f"EXPLAIN EXECUTE upnext_plan({', '.join(literals)})")
    finally:
        await conn.execute("DEALLOCATE upnext_plan")
    return "\n".join(r[0] for r in rows)


async def test_hot_statements_use_indexes(
    pg_broker: PostgresBroker, conn: asyncpg.Connection[Any], upnext_queue: str
) -> None:
    """With 20,000 queued rows, receive, extend and settle read indexes, never the table."""
    jobs = _jobs(pg_broker)
    await conn.execute(
        f"INSERT INTO {jobs} (id, queue, body) "
        "SELECT $1 || g, $2, 'x' FROM generate_series(1, 20000) AS g",
        upnext_queue + "-",
        upnext_queue,
    )
    await conn.execute(f"ANALYZE {jobs}")
    q, names = pg_broker._q, pg_broker._names
    ids = "'{" + ",".join(f"{upnext_queue}-{i}" for i in range(1, 101)) + "}'"
    tokens = "'{" + ",".join("1" * 100) + "}'"
    channels = (f"'{names.jobs_channel}'", f"'{names.results_channel}'")
    plans = {
        "receive": await _generic_plan(conn, q.receive, f"'{{{upnext_queue}}}'", "100", "30", "1"),
        "extend": await _generic_plan(conn, q.extend, ids, tokens, "30"),
        "settle": await _generic_plan(conn, q.settle, ids, tokens, *["'{}'"] * 19, *channels),
    }
    assert "jobs_ready" in plans["receive"], plans["receive"]
    for name, plan in plans.items():
        assert "Seq Scan on jobs" not in plan, f"{name}:\n{plan}"
    start = time.perf_counter()
    got = await pg_broker.receive([upnext_queue], limit=100, lease=30.0, wait=0.0)
    assert len(got) == 100
    assert time.perf_counter() - start < 0.5
    await pg_broker.purge(upnext_queue)
    await pg_broker.settle([Ack(d) for d in got])


async def test_statements_are_never_jit_compiled(
    pg_broker: PostgresBroker, conn: asyncpg.Connection[Any], upnext_queue: str
) -> None:
    """The broker's connections plan without JIT, however costly a deep queue makes a plan.

    With 1,000,000 queued rows the generic receive plan's cost passed
    jit_above_cost, and compiling it made every receive 25 ms instead of 3 ms.
    Here the threshold is lowered to 0 so that a plan of any size would be
    compiled if JIT were on (the control query on a plain connection shows
    the server can JIT).
    """
    await conn.execute("SET jit_above_cost = 0")
    control = await conn.fetch("EXPLAIN ANALYZE SELECT sum(g) FROM generate_series(1, 10) g")
    assert any("JIT" in r[0] for r in control), "this server cannot JIT: the test proves nothing"
    pool = await pg_broker._pool()
    async with pool.acquire() as broker_conn:
        await broker_conn.execute("SET jit_above_cost = 0")
        try:
            rows = await broker_conn.fetch(
                "EXPLAIN ANALYZE " + pg_broker._q.receive, [upnext_queue], 100, 30.0, 1
            )
        finally:
            await broker_conn.execute("RESET jit_above_cost")
    plan = "\n".join(r[0] for r in rows)
    assert "JIT" not in plan, plan


async def test_expired_results_are_swept(pg_broker: PostgresBroker, upnext_queue: str) -> None:
    """Expired results read as absent, and the cleanup sweep deletes their rows."""
    job_id = uuid.uuid4().hex
    await pg_broker.put_results([ResultWrite(job_id, upnext_queue, b"r", 0.05)])
    await asyncio.sleep(0.1)
    assert await pg_broker.get_result(job_id, queue=upnext_queue, wait=0.0) is None
    await pg_broker._cleanup_results()
    pool = await pg_broker._pool()
    sql = f'SELECT count(*) FROM "{pg_broker.options.schema}".results WHERE job_id = $1'
    assert await pool.fetchval(sql, job_id) == 0


async def test_enqueue_dedupes_on_job_id(pg_broker: PostgresBroker, upnext_queue: str) -> None:
    """dedupes_on_enqueue: an id already queued (or held) is not enqueued again."""
    assert pg_broker.capabilities.dedupes_on_enqueue
    job_id = uuid.uuid4().hex
    await pg_broker.enqueue_many([Envelope(job_id, upnext_queue, b"first")])
    await pg_broker.enqueue_many([Envelope(job_id, upnext_queue, b"second")])
    [got] = await pg_broker.receive([upnext_queue], limit=5, lease=5.0, wait=1.0)
    assert got.envelope.body == b"first"
    await pg_broker.enqueue_many([Envelope(job_id, upnext_queue, b"third")])  # while held
    assert await pg_broker.receive([upnext_queue], limit=5, lease=5.0, wait=0.0) == []
    assert await pg_broker.settle([Ack(got)]) == [None]
