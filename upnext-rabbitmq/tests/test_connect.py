"""A first connect that fails or is cancelled leaves nothing reconnecting behind."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from upnext.errors import BrokerUnavailable
from upnext_rabbitmq import RabbitBroker


def _reconnecting() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if "connection_factory" in repr(t.get_coro())]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


async def test_refused_first_connect_stops_reconnecting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    broker = RabbitBroker(f"amqp://guest:guest@127.0.0.1:{port}/")
    with pytest.raises(BrokerUnavailable):
        await broker.connect()
    await asyncio.sleep(0)
    assert _reconnecting() == []


async def test_cancelled_first_connect_stops_reconnecting(silent_port: int) -> None:
    """A caller's timeout around connect (as upnext.run's connect_timeout) ends it for good."""
    broker = RabbitBroker(f"amqp://guest:guest@127.0.0.1:{silent_port}/")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await broker.connect()
    await asyncio.sleep(0)
    assert _reconnecting() == []
