"""RabbitMQ keeps no shared state: core takes it from the result store (`results=`).

A RabbitMQ broker paired with a Redis or a PostgreSQL result store gives
`client.state` = that store: the whole `StateStoreConformance` suite passes
through it (with Redis, `WorkerTickSemantics` too). RabbitMQ alone refuses a
feature that needs state with a one-line `ConfigurationError` naming
``results=``. Each Redis test uses a key
prefix of its own (deleted after); PostgreSQL a schema of this module's own
(dropped after). Unreachable servers fail under ``CI`` /
``UPNEXT_REQUIRE_SERVICES`` and skip otherwise.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from upnext._client import Client, Factories
from upnext.broker.redact import redact_url
from upnext.broker.state import StateStore
from upnext.errors import BrokerUnavailable, ConfigurationError
from upnext.testing import StateStoreConformance, unavailable
from upnext.testing.tick import WorkerTickSemantics

pytest_plugins = ["upnext.testing.plugin"]

AMQP_URL = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _with(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


async def _connected(results_url: str) -> Client:
    client = Factories(AMQP_URL, results_url).build()
    try:
        await client.connect()
    except BrokerUnavailable as exc:
        await client.aclose()
        unavailable(f"RabbitMQ + {redact_url(results_url)}: {exc} (docker compose up -d)")
    return client


async def _delete_prefix(prefix: str) -> None:
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in raw.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await raw.delete(*keys)
    finally:
        await raw.aclose()


async def _drop_schema(schema: str) -> None:
    try:
        conn = await asyncpg.connect(POSTGRES_URL)
    except OSError:
        return  # no server: nothing was created
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    """A schema for this module's PostgreSQL state, dropped at the end."""
    schema = f"upnext_test_{uuid.uuid4().hex[:10]}"
    yield schema
    asyncio.run(_drop_schema(schema))


class TestRabbitMQWithRedisState(StateStoreConformance, WorkerTickSemantics):
    """The StateStore suite and the worker tick through `client.state` of amqp:// + redis://."""

    @pytest_asyncio.fixture
    async def state(self) -> AsyncIterator[StateStore]:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        client = await _connected(_with(REDIS_URL, f"prefix={prefix}"))
        store: object = client.store  # the result store is the StateStore
        assert client.state is store
        yield client.require_state("the suite")
        await client.aclose()
        await _delete_prefix(prefix)


class TestRabbitMQWithPostgresState(StateStoreConformance):
    """The StateStore suite through `client.state` of amqp:// + results=postgresql://."""

    @pytest_asyncio.fixture
    async def state(self, pg_schema: str) -> AsyncIterator[StateStore]:
        client = await _connected(_with(POSTGRES_URL, f"schema={pg_schema}"))
        store: object = client.store  # the result store is the StateStore
        assert client.state is store
        yield client.require_state("the suite")
        await client.aclose()


def test_rabbitmq_alone_names_results_for_a_feature_that_needs_state() -> None:
    """No result store: the check at configuration and at use both name results=."""
    factories = Factories(AMQP_URL, None)
    with pytest.raises(ConfigurationError, match=r"pass results='redis://\.\.\.'") as info:
        factories.require_state("rate_limit=")
    message = str(info.value)
    assert message.startswith("rate_limit= needs shared state: amqp://")
    assert "UPNEXT_RESULTS_URL" in message
    assert "\n" not in message
    assert "guest:guest" not in message  # the password is never printed
