"""Fixtures for the RabbitMQ backend tests: a connected broker on a real server.

The server is ``UPNEXT_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/).
If it cannot be reached the tests fail when ``CI`` or ``UPNEXT_REQUIRE_SERVICES``
is set, and skip with one loud line otherwise.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
import pytest_asyncio
from aiormq.exceptions import AMQPConnectionError
from upnext.broker.redact import redact_url
from upnext.errors import BrokerUnavailable
from upnext.testing.proxy import FaultyProxy
from upnext_rabbitmq import RabbitBroker
from upnext_rabbitmq.results import ReplyInbox
from upnext_rabbitmq.topology import amqp_queues

pytest_plugins = ["upnext.testing.plugin"]

AMQP_URL = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

BrokerFactory = Callable[..., Awaitable[RabbitBroker]]


def _unreachable(exc: BaseException) -> None:
    message = (
        f"RabbitMQ at {redact_url(AMQP_URL)} is unreachable ({exc}); start one with "
        "`docker compose up -d rabbitmq` or set UPNEXT_TEST_AMQP_URL"
    )
    if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
        pytest.fail(message)
    print(f"\n!!! SKIPPING RabbitMQ tests: {message}")
    pytest.skip(message)


async def delete_queues(queues: set[str]) -> None:
    """Delete the work, dead-letter and delay queues of `queues` (test cleanup)."""
    if not queues:
        return
    try:
        connection = await aio_pika.connect(AMQP_URL)
    except (OSError, AMQPConnectionError):
        return  # no server: nothing was declared (the tests skipped or failed)
    try:
        channel = await connection.channel()
        for queue in queues:
            for name in amqp_queues(queue):
                await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def make_broker() -> AsyncIterator[BrokerFactory]:
    """A factory of connected brokers (URL options as keywords); all closed and cleaned after."""
    made: list[RabbitBroker] = []

    async def make(inbox: ReplyInbox | None = None, **options: str) -> RabbitBroker:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        url = AMQP_URL + (("&" if "?" in AMQP_URL else "?") + query if query else "")
        broker = RabbitBroker(url, inbox=inbox)
        try:
            await broker.connect()
        except BrokerUnavailable as exc:
            _unreachable(exc)
        made.append(broker)
        return broker

    yield make
    declared: set[str] = set()
    for broker in made:
        declared |= broker._declared
        await broker.aclose()
    await delete_queues(declared)


@pytest.fixture
def amqp_url() -> str:
    """The test server's URL."""
    return AMQP_URL


@pytest_asyncio.fixture
async def broker(make_broker: BrokerFactory) -> RabbitBroker:
    """A connected RabbitBroker; its queues are deleted after the test."""
    return await make_broker()


@pytest_asyncio.fixture
async def proxy(amqp_url: str) -> AsyncIterator[FaultyProxy]:
    """A loopback TCP proxy in front of the test server, to cut and refuse on purpose."""
    target = urlsplit(amqp_url)
    async with FaultyProxy(target.hostname or "127.0.0.1", target.port or 5672) as started:
        yield started


@pytest.fixture
def proxied_url(amqp_url: str, proxy: FaultyProxy) -> str:
    """The test server's URL through `proxy`."""
    parts = urlsplit(amqp_url)
    user, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}{at}127.0.0.1:{proxy.port}"))


@pytest.fixture
def queue_deleter() -> Callable[[set[str]], Awaitable[None]]:
    """`delete_queues`, for tests that create queues through a Worker."""
    return delete_queues
