"""Fixtures for upnext-postgres tests, run against a real PostgreSQL server.

The server is ``UPNEXT_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Each test session works in a
schema of its own, dropped at the end. If the server cannot be reached the
tests fail when ``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and otherwise
skip with one line naming the URL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from upnext.broker.redact import redact_url
from upnext_postgres import PostgresBroker

pytest_plugins = ["upnext.testing.plugin"]

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
_UNREACHABLE = pytest.StashKey[str]()


def with_options(url: str, **options: str) -> str:
    """`url` with extra query options appended."""
    parts = urlsplit(url)
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


async def _ping(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=3.0)
    await conn.close()


async def _drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url, timeout=3.0)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """The server URL (no upnext options); fails or skips if it is unreachable."""
    url = os.environ.get("UPNEXT_TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        asyncio.run(_ping(url))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = (
            f"PostgreSQL unreachable at {redact_url(url)} ({type(exc).__name__}); "
            "start one (docker compose up postgres) or set UPNEXT_TEST_POSTGRES_URL"
        )
        if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
            pytest.fail(message)
        request.config.stash[_UNREACHABLE] = message
        pytest.skip(message)
    return url


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """One loud line when the PostgreSQL tests were skipped for want of a server."""
    message = config.stash.get(_UNREACHABLE, None)
    if message is not None:
        terminalreporter.write_line(
            f"upnext-postgres tests SKIPPED: {message}", yellow=True, bold=True
        )


@pytest.fixture
def url_with() -> Callable[..., str]:
    """`with_options`, for tests that build URLs of their own."""
    return with_options


@pytest.fixture(scope="session")
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema unique to this test session, dropped at the end."""
    schema = f"upnext_test_{uuid.uuid4().hex[:10]}"
    yield schema
    asyncio.run(_drop_schema(postgres_url, schema))


@pytest.fixture
def pg_url(postgres_url: str, pg_schema: str) -> str:
    """The broker URL: the test server, in this session's schema."""
    return with_options(postgres_url, schema=pg_schema)


@pytest_asyncio.fixture
async def pg_broker(pg_url: str) -> AsyncIterator[PostgresBroker]:
    """A connected `PostgresBroker` on this session's schema, closed after the test."""
    broker = PostgresBroker.from_url(pg_url)
    await broker.connect()
    yield broker
    await broker.aclose()
