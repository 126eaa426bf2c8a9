"""Redis Sentinel: a private master and sentinel on free ports; jobs run via the sentinel URL."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import upnext
from upnext.broker.protocol import Ack, Envelope
from upnext_redis import RedisBroker

Server = Callable[..., AbstractContextManager[int]]
SERVICE = "upnext-test"


Running = Callable[[list[str]], AbstractContextManager[subprocess.Popen[bytes]]]


@contextmanager
def _sentinel(running: Running, master_port: int, port: int) -> Iterator[int]:
    """``redis-server --sentinel`` on `port`, watching the master on `master_port`."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (needed for a private sentinel)")
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "sentinel.conf"  # a sentinel rewrites its own config
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 60000\n"
        )
        with running([binary, str(config), "--sentinel"]):
            yield port


async def _master_known(port: int, within: float = 10.0) -> None:
    """Wait until the sentinel on `port` answers with the master's address."""
    deadline = time.monotonic() + within
    while True:
        client = aioredis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            if await client.sentinel_get_master_addr_by_name(SERVICE):
                return
        except (OSError, aioredis.RedisError):
            if time.monotonic() > deadline:
                raise
        finally:
            await client.aclose()
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def sentinel_url(
    private_redis: Server, free_port: Callable[[], int], running: Running
) -> AsyncIterator[tuple[str, int]]:
    """A sentinel URL for a private master (db 2, own prefix), and the master's port."""
    with private_redis() as master, _sentinel(running, master, free_port()) as sentinel:
        await _master_known(sentinel)
        # An unreachable first sentinel: redis-py asks the next one.
        dead = free_port()
        yield f"redis+sentinel://127.0.0.1:{dead},127.0.0.1:{sentinel}/{SERVICE}/2", master


async def test_the_broker_finds_its_master_through_the_sentinel(
    sentinel_url: tuple[str, int],
) -> None:
    """Enqueue, receive and settle reach the master the sentinel names, in database 2."""
    url, master = sentinel_url
    broker = RedisBroker.from_url(url)
    raw = aioredis.Redis(port=master, db=2)
    try:
        await broker.connect()
        await broker.enqueue_many([Envelope("j", "q", b"x")])
        assert await raw.hexists("upnext:{q}:jobs", "j")
        (got,) = await broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
        assert got.envelope.id == "j"
        assert await broker.settle([Ack(got)]) == [None]
        assert (await broker.stats("q")).ready == 0
    finally:
        await raw.aclose()
        await broker.aclose()


async def test_a_worker_runs_jobs_and_returns_results_through_the_sentinel(
    sentinel_url: tuple[str, int],
) -> None:
    """submit -> worker runs -> result, with the broker and result store on the sentinel URL."""
    url, _ = sentinel_url
    worker = upnext.Worker("sentinel", broker=url, concurrency=4, receive_wait=0.5)

    @worker.task(name="double", result_ttl=60)
    async def double(n: int) -> int:
        return 2 * n

    async with worker:
        futures = await double.submit_many([{"n": n} for n in range(20)])
        values = await asyncio.wait_for(
            asyncio.gather(*(f.value(timeout=10.0) for f in futures)), 20.0
        )
    await worker.aclose()
    assert values == [2 * n for n in range(20)]
