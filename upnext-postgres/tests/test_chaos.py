"""Connections cut under a running worker: nothing is lost and the worker resumes by itself.

The worker reaches PostgreSQL through a TCP proxy this test runs on
127.0.0.1; cutting the proxy's connections kills the worker's pool and LISTEN
connections mid-flight, never the shared server's other sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest_asyncio
import upnext


class CuttingProxy:
    """A loopback TCP proxy whose live connections can all be cut at once."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> int:
        """Abort every proxied connection; returns how many sockets were cut."""
        writers, self.writers = self.writers, set()
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    async def aclose(self) -> None:
        """Stop listening and cut everything."""
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest_asyncio.fixture
async def proxy(postgres_url: str) -> AsyncIterator[CuttingProxy]:
    """A cutting proxy in front of the test server."""
    parts = urlsplit(postgres_url)
    running = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await running.start()
    yield running
    await running.aclose()


async def test_cut_connections_lose_no_job(
    pg_url: str, proxy: CuttingProxy, url_with: Callable[..., str]
) -> None:
    """Five cuts while 300 jobs run: every job completes, the worker recovers alone."""
    parts = urlsplit(pg_url)
    proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
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
