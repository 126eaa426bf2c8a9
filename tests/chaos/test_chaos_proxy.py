"""The fault proxy itself: forwards, delays, blackholes and cuts (an echo server behind it)."""

from __future__ import annotations

import asyncio
import time

import pytest
from chaoskit.proxy import FaultyProxy

pytestmark = pytest.mark.chaos


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_proxy_forwards_delays_blackholes_and_cuts() -> None:
    """Each fault is visible from the client side, and only loopback targets are accepted."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    async with FaultyProxy("127.0.0.1", port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 2.0) == b"ping"
        proxy.delay = 0.2
        started = time.monotonic()
        writer.write(b"slow")
        assert await asyncio.wait_for(reader.read(4), 2.0) == b"slow"
        assert time.monotonic() - started >= 0.4  # delayed each way
        proxy.delay = 0.0
        proxy.blackhole()
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(4), 0.3)
        proxy.cut()
        assert await asyncio.wait_for(reader.read(4), 2.0) == b""
        writer.close()
    server.close()
    with pytest.raises(ValueError, match="loopback"):
        FaultyProxy("10.0.0.1", 6379)


async def test_proxy_goes_down_comes_back_and_silences_only_existing_links() -> None:
    """down() refuses connects until up() on the same port; existing_only spares new links."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    async with FaultyProxy("127.0.0.1", port) as proxy:
        old_reader, old_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.blackhole(existing_only=True)
        new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        new_writer.write(b"new!")
        assert await asyncio.wait_for(new_reader.read(4), 2.0) == b"new!"
        old_writer.write(b"old!")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(old_reader.read(4), 0.3)
        old_writer.close()  # the client hangs up: recorded even while silenced
        await asyncio.sleep(0.1)
        assert proxy.links[0].closed_by_client is not None
        await proxy.down()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.up()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"back")
        assert await asyncio.wait_for(reader.read(4), 2.0) == b"back"
        for w in (new_writer, writer):
            w.close()
    server.close()
