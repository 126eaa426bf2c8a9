"""Connections cut under a running worker: nothing is lost and the worker resumes by itself.

The worker reaches PostgreSQL through a TCP proxy this test runs on
127.0.0.1; cutting the proxy's connections kills the worker's pool and LISTEN
connections mid-flight, never the shared server's other sessions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import upnext
from upnext.broker.protocol import Ack, Envelope
from upnext.errors import BrokerUnavailable
from upnext.testing.proxy import FaultyProxy
from upnext_postgres import PostgresBroker
from upnext_postgres._options import PostgresOptions


@pytest_asyncio.fixture
async def proxy(postgres_url: str) -> AsyncIterator[FaultyProxy]:
    """A loopback proxy in front of the test server."""
    parts = urlsplit(postgres_url)
    async with FaultyProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as running:
        yield running


def _proxied(url: str, proxy: FaultyProxy, **options: str) -> str:
    parts = urlsplit(url)
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return parts._replace(
        netloc=f"{parts.username}@127.0.0.1:{proxy.port}", query=parts.query + extra
    ).geturl()


async def test_cut_connections_lose_no_job(pg_url: str, proxy: FaultyProxy) -> None:
    """Five cuts while 300 jobs run: every job completes, the worker recovers alone."""
    proxied = _proxied(pg_url, proxy)
    queue = f"chaos-{uuid.uuid4().hex[:10]}"
    done: set[int] = set()
    consumer = upnext.Worker(queue, broker=proxied, concurrency=10, lease=1.0)
    producer = upnext.Worker(queue, broker=pg_url)

    async def work(i: int) -> int:
        await asyncio.sleep(0.04)
        done.add(i)
        return i

    consumer.task(name=f"{queue}.work")(work)
    submit = producer.task(name=f"{queue}.work")(work)
    futures = await submit.submit_many([{"i": i} for i in range(300)])
    async with consumer:
        cuts_mid_run = 0
        for _ in range(5):
            await asyncio.sleep(0.25)
            cuts_mid_run += proxy.cut() > 0 and 0 < len(done) < 300
        values = [await f.value(timeout=20.0) for f in futures]
    await consumer.aclose()
    await producer.aclose()
    assert cuts_mid_run >= 3, cuts_mid_run
    assert sorted(values) == list(range(300))
    assert done == set(range(300))


async def test_silently_dead_listen_connection_is_replaced(
    pg_url: str, pg_broker: PostgresBroker, proxy: FaultyProxy
) -> None:
    """A LISTEN connection that stops answering (no close, no reset) is pinged, dropped
    and reopened, so notifications flow again without waiting for the recovery interval."""
    broker = PostgresBroker.from_url(_proxied(pg_url, proxy, lease_recovery_interval="30"))
    broker._listener.ping_every, broker._listener.ping_timeout = 0.2, 0.3
    queue = f"frozen-{uuid.uuid4().hex[:10]}"
    try:
        await broker.connect()
        pooled = len(proxy.links)
        await broker.receive([queue], limit=1, lease=5.0, wait=0.05)  # opens the LISTEN
        assert len(proxy.links) == pooled + 1
        proxy.freeze(len(proxy.links))
        receiving = asyncio.create_task(broker.receive([queue], limit=1, lease=5.0, wait=5.0))
        await asyncio.sleep(1.0)  # the ping times out and a new LISTEN connection opens
        start = time.monotonic()
        await pg_broker.enqueue_many([Envelope(uuid.uuid4().hex, queue, b"x")])
        [got] = await receiving
        assert time.monotonic() - start < 1.0
        await broker.settle([Ack(got)])
    finally:
        await broker.aclose()


async def test_silently_dead_pool_is_replaced_after_a_timeout(
    pg_url: str, pg_broker: PostgresBroker, proxy: FaultyProxy
) -> None:
    """Every pooled connection goes silent: the statement times out, the pool is
    replaced, and the next receive works on fresh connections."""
    broker = PostgresBroker.from_url(_proxied(pg_url, proxy, command_timeout="0.5"))
    queue = f"halfopen-{uuid.uuid4().hex[:10]}"
    try:
        await broker.connect()
        await broker.receive([queue], limit=1, lease=5.0, wait=0)
        for number in range(1, len(proxy.links) + 1):
            proxy.freeze(number)
        frozen = len(proxy.links)
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(broker.receive([queue], limit=1, lease=5.0, wait=0), 5.0)
        await pg_broker.enqueue_many([Envelope("after", queue, b"x")])
        started = time.monotonic()
        [got] = await asyncio.wait_for(broker.receive([queue], limit=1, lease=5.0, wait=0), 5.0)
        assert got.envelope.id == "after"
        await broker.settle([Ack(got)])
        # Neither call waited on an old, silent connection: all went to new ones.
        assert time.monotonic() - started < 0.5
        assert len(proxy.links) > frozen
    finally:
        await broker.aclose()


def test_command_timeout_defaults_to_five_seconds() -> None:
    """Small enough that a half-open connection is found within about 10 s."""
    assert PostgresOptions.from_url("postgresql://h/db").command_timeout == 5.0


async def test_callers_queued_on_a_frozen_pool_each_fail_within_the_deadline(
    pg_url: str, proxy: FaultyProxy
) -> None:
    """The server stops answering; three submits share one pooled connection. Each raises
    BrokerUnavailable within connect_timeout + command_timeout of its own start, rather than
    after every caller queued before it."""
    options = {"pool_size": "1", "connect_timeout": "1", "command_timeout": "0.5"}
    broker = PostgresBroker.from_url(_proxied(pg_url, proxy, **options))
    queue = f"frozen-{uuid.uuid4().hex[:10]}"

    async def submit(i: int) -> float:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(broker.enqueue_many([Envelope(f"j{i}", queue, b"x")]), 30.0)
        return time.monotonic() - started

    try:
        await broker.connect()
        proxy.blackhole()
        took = await asyncio.gather(*(submit(i) for i in range(3)))
        assert max(took) <= 1.5 + 0.3, took
    finally:
        proxy.blackhole(False)
        await broker.aclose()
