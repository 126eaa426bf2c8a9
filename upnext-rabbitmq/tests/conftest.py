"""Fixtures for the RabbitMQ backend tests: a connected broker on a real server.

The server is ``UPNEXT_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/),
on a vhost of each test process's own where it is this machine's (`_own_vhost`).
If it cannot be reached the tests fail when ``CI`` or ``UPNEXT_REQUIRE_SERVICES``
is set, and skip with one loud line otherwise.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

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

SHARED_URL = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _own_vhost(url: str) -> str:
    """`url` on a vhost of this test process's own, deleted when it exits.

    Tests that count or list every dead letter a broker can see
    (``dlq_count()``) must not see another process's: pytest-xdist runs two
    at once, and the server is shared with other work. Made with
    ``rabbitmqctl``, so only for a server on this machine; elsewhere (or if
    it fails) the tests use `url` as given.
    """
    parts = urlsplit(url)
    if shutil.which("rabbitmqctl") is None or parts.hostname not in ("127.0.0.1", "localhost"):
        return url
    vhost = f"upnext-test-{uuid.uuid4().hex[:12]}"
    user = unquote(parts.username or "guest")
    commands = [["add_vhost", vhost], ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]]
    try:
        for command in commands:
            ctl = ["rabbitmqctl", "-q", *command]
            subprocess.run(ctl, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"\n!!! RabbitMQ tests on the shared vhost: no vhost of their own ({exc})")
        return url
    delete = ["rabbitmqctl", "-q", "delete_vhost", vhost]
    atexit.register(subprocess.run, delete, capture_output=True, timeout=60)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


AMQP_URL = _own_vhost(SHARED_URL)

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
    """A factory of connected brokers (URL options as keywords); all closed and cleaned after.

    `url` gives another server or vhost (queues there are not cleaned: see
    `private_vhost_url`).
    """
    made: list[RabbitBroker] = []

    async def make(
        inbox: ReplyInbox | None = None, *, url: str = AMQP_URL, **options: str
    ) -> RabbitBroker:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        url += ("&" if "?" in url else "?") + query if query else ""
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


async def _rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` against the local node; raise with its output if it fails."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {output.decode().strip()}")


@pytest_asyncio.fixture
async def private_vhost_url() -> AsyncIterator[str]:
    """`AMQP_URL` on a fresh vhost of its own, deleted afterwards.

    For the tests that act on everything a broker can see (``dlq_purge()``):
    on the shared vhost they would remove other tests' and other people's
    dead letters. The vhost is made with ``rabbitmqctl``, so the server must
    be this machine's; elsewhere the test skips (fails under CI).
    """
    parts = urlsplit(AMQP_URL)
    if shutil.which("rabbitmqctl") is None or parts.hostname not in ("127.0.0.1", "localhost"):
        message = "a private vhost needs rabbitmqctl and the test server on this machine"
        if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    vhost = f"upnext-test-{uuid.uuid4().hex[:12]}"
    user = unquote(parts.username or "guest")
    await _rabbitmqctl("add_vhost", vhost)
    try:
        await _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        await _rabbitmqctl("delete_vhost", vhost)


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
