"""Connection trouble: a failed first connect stops for good; enqueue never hangs."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from upnext.broker.protocol import Ack, Envelope
from upnext.errors import BrokerUnavailable
from upnext.testing.loopback import free_port
from upnext.testing.proxy import FaultyProxy
from upnext_rabbitmq import RabbitBroker
from upnext_rabbitmq._publish import RECONNECT_WAIT


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
    port = free_port()
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


async def test_enqueue_while_the_server_is_gone_fails_fast(
    upnext_queue: str, proxy: FaultyProxy, proxied_url: str
) -> None:
    """Connection lost and not back: enqueue raises BrokerUnavailable, it does not hang."""
    broker = RabbitBroker(proxied_url)
    await broker.connect()
    try:
        await broker.enqueue_many([Envelope("before", upnext_queue, b"x")])
        await proxy.down()
        await asyncio.sleep(0.5)  # the publisher notices the lost connection
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.enqueue_many([Envelope("during", upnext_queue, b"x")])
        assert time.monotonic() - started <= RECONNECT_WAIT + 1.0
    finally:
        await broker.aclose()


async def test_receive_rides_out_an_outage_and_says_so_once(
    amqp_url: str,
    upnext_queue: str,
    proxy: FaultyProxy,
    proxied_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the server is gone receive returns nothing (no error); it consumes once back.

    The consumer's connection is tried again every 0.5 s within each receive;
    the outage is logged once, however many receives it spans.
    """
    broker = RabbitBroker(proxied_url)
    await broker.connect()
    try:
        assert await broker.receive([upnext_queue], limit=1, lease=30, wait=0.1) == []
        await proxy.down()
        with caplog.at_level(logging.INFO, logger="upnext.rabbitmq"):
            for _ in range(3):
                got = await broker.receive([upnext_queue], limit=1, lease=30, wait=0.6)
                assert got == []
            await proxy.up()
            await broker.enqueue_many([Envelope("back", upnext_queue, b"x")])
            got = await broker.receive([upnext_queue], limit=1, lease=30, wait=3.0)
        assert [d.envelope.id for d in got] == ["back"]
        messages = [r.getMessage() for r in caplog.records if r.name == "upnext.rabbitmq"]
        assert sum("consumer cannot reach RabbitMQ" in m for m in messages) == 1
        assert sum("consumer reconnected" in m for m in messages) == 1
        await broker.settle([Ack(d) for d in got])
    finally:
        await broker.aclose()


async def test_an_admin_call_on_a_frozen_server_raises_unavailable(
    proxy: FaultyProxy, proxied_url: str
) -> None:
    """Connected, then silent: an admin call raises BrokerUnavailable, never CancelledError.

    aiormq cancels the requests of a connection whose heartbeats stopped; the
    caller was not cancelled, so that must not reach it as a cancellation.
    """
    broker = RabbitBroker(f"{proxied_url}{'&' if '?' in proxied_url else '?'}heartbeat=1")
    await broker.connect()
    try:
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(broker.dlq_count(), 30.0)
        assert time.monotonic() - started <= 8.0  # (1 + 1) * 3 s without a frame, and a margin
    finally:
        proxy.blackhole(False)
        await broker.aclose()
