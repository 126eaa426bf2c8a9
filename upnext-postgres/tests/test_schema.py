"""Schema creation and migration: concurrent connects, self-applied SQL, version checks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import pytest_asyncio
from upnext.broker.protocol import Ack, Envelope
from upnext.broker.state import StateWrite
from upnext.errors import BrokerError, ConfigurationError
from upnext_postgres import SCHEMA_VERSION, PostgresBroker, schema_sql
from upnext_postgres.__main__ import main
from upnext_postgres._state_ddl import state_ddl
from upnext_postgres.schema import Names, _bootstrap, _record, _v1


@pytest_asyncio.fixture
async def fresh_schema(postgres_url: str) -> AsyncIterator[str]:
    """A schema name nobody has created yet, dropped after the test."""
    schema = f"upnext_mig_{uuid.uuid4().hex[:10]}"
    yield schema
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _versions(url: str, schema: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    finally:
        await conn.close()
    return [r["version"] for r in rows]


async def test_concurrent_connects_migrate_once(
    postgres_url: str, fresh_schema: str, url_with: Callable[..., str]
) -> None:
    """Eight brokers connecting at once to an empty schema all succeed; it is built once."""
    url = url_with(postgres_url, schema=fresh_schema, pool_size="1")
    brokers = [PostgresBroker.from_url(url) for _ in range(8)]
    try:
        await asyncio.gather(*(b.connect() for b in brokers))
        assert await brokers[0].queues() == []
    finally:
        await asyncio.gather(*(b.aclose() for b in brokers))
    assert await _versions(postgres_url, fresh_schema) == list(range(1, SCHEMA_VERSION + 1))


async def test_self_applied_sql_leaves_nothing_to_migrate(
    postgres_url: str, fresh_schema: str, url_with: Callable[..., str]
) -> None:
    """schema_sql() applied by hand builds a schema connect() accepts as current."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(schema_sql(fresh_schema))
        await conn.execute(schema_sql(fresh_schema))  # idempotent
    finally:
        await conn.close()
    async with PostgresBroker.from_url(url_with(postgres_url, schema=fresh_schema)) as b:
        assert await b.dlq_count() == 0
    assert await _versions(postgres_url, fresh_schema) == list(range(1, SCHEMA_VERSION + 1))


async def test_newer_schema_is_refused(
    postgres_url: str, fresh_schema: str, url_with: Callable[..., str]
) -> None:
    """A schema migrated by a newer upnext-postgres is refused with a clear BrokerError."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(schema_sql(fresh_schema))
        await conn.execute(
            f'INSERT INTO "{fresh_schema}".schema_version (version) VALUES ($1)',
            SCHEMA_VERSION + 1,
        )
    finally:
        await conn.close()
    broker = PostgresBroker.from_url(url_with(postgres_url, schema=fresh_schema))
    with pytest.raises(BrokerError, match="upgrade upnext-postgres"):
        await broker.connect()
    await broker.aclose()


def test_schema_name_is_validated() -> None:
    """A schema name that is not a plain identifier is a configuration error."""
    with pytest.raises(ConfigurationError, match="schema name"):
        schema_sql('bad"; DROP TABLE x; --')


def test_module_prints_the_sql(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m upnext_postgres sql --schema NAME` prints schema_sql(NAME)."""
    assert main(["sql", "--schema", "jobs_here"]) == 0
    assert capsys.readouterr().out == schema_sql("jobs_here")
    assert main(["sql", "--schema", "bad-name"]) == 2
    assert "schema name" in capsys.readouterr().err


async def test_upnext_schema_command_prints_sql_that_connect_accepts(
    postgres_url: str, fresh_schema: str, url_with: Callable[..., str]
) -> None:
    """`upnext schema --broker URL` prints the URL's DDL; applied, connect finds it current."""
    url = url_with(postgres_url.replace("postgres@", "postgres:canary-pw@"), schema=fresh_schema)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "upnext.cli", "schema", "--broker", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == schema_sql(fresh_schema)
    assert "canary-pw" not in done.stdout + done.stderr
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(done.stdout)
    finally:
        await conn.close()
    async with PostgresBroker.from_url(url_with(postgres_url, schema=fresh_schema)) as b:
        assert await b.dlq_count() == 0
    assert await _versions(postgres_url, fresh_schema) == list(range(1, SCHEMA_VERSION + 1))


async def test_a_version_1_schema_gains_the_state_tables(
    postgres_url: str, fresh_schema: str, url_with: Callable[..., str]
) -> None:
    """A schema built before the StateStore is migrated at connect, its jobs table kept."""
    n = Names(fresh_schema)
    conn = await asyncpg.connect(postgres_url)
    try:
        for statement in [*_bootstrap(n), *_v1(n), _record(n, 1)]:
            await conn.execute(statement)
        await conn.execute(f"INSERT INTO {n.jobs} (id, queue, body) VALUES ('old', 'q', 'x')")
    finally:
        await conn.close()
    async with PostgresBroker.from_url(url_with(postgres_url, schema=fresh_schema)) as b:
        assert await b.state_put([StateWrite("k", b"v")]) == [True]
        assert [e.value if e else None for e in await b.state_get(["k"])] == [b"v"]
        assert (await b.stats("q")).ready == 1
    assert await _versions(postgres_url, fresh_schema) == list(range(1, SCHEMA_VERSION + 1))


async def test_a_version_2_schema_gains_the_priority_column(
    postgres_url: str, fresh_schema: str, url_with: Callable[..., str]
) -> None:
    """A jobs table built before priorities gains the column at connect; its jobs read 0."""
    n = Names(fresh_schema)
    conn = await asyncpg.connect(postgres_url)
    try:
        for version, build in [(1, _v1), (2, state_ddl)]:
            for statement in [*_bootstrap(n), *build(n), _record(n, version)]:
                await conn.execute(statement)
        await conn.execute(f"INSERT INTO {n.jobs} (id, queue, body) VALUES ('old', 'q', 'x')")
    finally:
        await conn.close()
    async with PostgresBroker.from_url(url_with(postgres_url, schema=fresh_schema)) as b:
        await b.enqueue_many([Envelope("new", "q", b"y", 0.0, 6)])
        got = await b.receive(["q"], limit=2, lease=30.0, wait=1.0)
        assert {d.envelope.id: d.envelope.priority for d in got} == {"old": 0, "new": 6}
        await b.settle([Ack(d) for d in got])
    assert await _versions(postgres_url, fresh_schema) == list(range(1, SCHEMA_VERSION + 1))
