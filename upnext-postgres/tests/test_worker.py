"""A real upnext Worker on PostgreSQL: results, failures and a malformed row."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
import upnext
from upnext_postgres import PostgresBroker


async def test_worker_runs_jobs_and_dead_letters_failures(pg_url: str) -> None:
    """Results come back through the results table; an exhausted job lands in the DLQ."""
    queue = f"w-{uuid.uuid4().hex[:10]}"
    worker = upnext.Worker(queue, broker=pg_url, concurrency=5)

    @worker.task(name=f"{queue}.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @worker.task(name=f"{queue}.boom", retries=1, retry_delay=0.05)
    async def boom() -> None:
        raise ValueError("boom")

    async with worker:
        assert (await add.wait(x=2, y=3, wait_timeout=10.0)).value == 5
        with pytest.raises(upnext.TaskExecutionError, match="boom"):
            await boom.wait(wait_timeout=10.0)
        page = await worker.dlq.list(queue=queue)
        assert [e.function for e in page.items] == [f"{queue}.boom"]
    await worker.aclose()


async def test_malformed_row_is_dead_lettered_by_the_worker(
    pg_url: str, pg_broker: PostgresBroker
) -> None:
    """A garbage row inserted straight into the jobs table is dead-lettered; work goes on."""
    queue = f"w-{uuid.uuid4().hex[:10]}"
    worker = upnext.Worker(queue, broker=pg_url, concurrency=2)

    @worker.task(name=f"{queue}.ok")
    async def ok() -> str:
        return "fine"

    conn = await asyncpg.connect(pg_broker.options.dsn)
    try:
        await conn.execute(
            f'INSERT INTO "{pg_broker.options.schema}".jobs (id, queue, body) VALUES ($1, $2, $3)',
            "garbage-" + uuid.uuid4().hex,
            queue,
            b"\xffnot a job body",
        )
    finally:
        await conn.close()
    async with worker:
        assert (await ok.wait(wait_timeout=10.0)).value == "fine"
        await worker.join()
        page = await worker.dlq.list(queue=queue)
        assert len(page.items) == 1
        assert "undecodable" in page.items[0].reason
    await worker.aclose()
    assert (await pg_broker.stats(queue)).ready == 0
