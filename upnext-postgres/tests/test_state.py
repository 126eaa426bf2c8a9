"""State SQL the conformance suite cannot see: key ranges, scope encoding, expired rows swept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from upnext.broker.state import StateWrite
from upnext_postgres import PostgresBroker
from upnext_postgres._state import prefix_end

_TOP = chr(0x10FFFF)  # the greatest code point


@pytest_asyncio.fixture
async def conn(pg_broker: PostgresBroker) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A plain asyncpg connection of the test's own, to look at the rows."""
    connection = await asyncpg.connect(pg_broker.options.dsn)
    yield connection
    await connection.close()


@pytest.mark.parametrize(
    ("prefix", "end"),
    [("", None), ("ab", "ac"), (f"a{_TOP}", "b"), (_TOP * 2, None), ("\ud7ff", "\ue000")],
)
def test_prefix_end_is_the_least_string_past_the_prefix(prefix: str, end: str | None) -> None:
    """Trailing top code points carry over; surrogates (never in a key) are skipped."""
    assert prefix_end(prefix) == end


async def test_scan_range_is_exact_at_code_point_edges(
    pg_broker: PostgresBroker, upnext_queue: str
) -> None:
    """Keys sort by code point, not by the server's collation; the range ends at the prefix."""
    p = f"{upnext_queue}:p"
    inside = [p, f"{p}\x7f", f"{p}é", f"{p}{_TOP}", f"{p}{_TOP}z"]
    outside = [f"{upnext_queue}:o{_TOP}", f"{upnext_queue}:q", f"{upnext_queue}:P"]
    await pg_broker.state_put([StateWrite(k, b"v", 60.0) for k in inside + outside])
    page = await pg_broker.state_scan(p)
    assert [k for k, _ in page.entries] == inside
    tail = await pg_broker.state_scan(f"{p}{_TOP}")  # no upper bound: to the end of the scope
    assert [k for k, _ in tail.entries] == inside[3:]


async def test_no_scope_and_the_empty_scope_are_apart(
    pg_broker: PostgresBroker, upnext_queue: str
) -> None:
    """Scope "" is a scope like any other: its entries are not the unscoped ones."""
    key = f"{upnext_queue}:k"
    await pg_broker.state_put([StateWrite(key, b"none", 60.0)])
    await pg_broker.state_put([StateWrite(key, b"empty", 60.0)], scope="")
    unscoped, empty = await pg_broker.state_get([key]), await pg_broker.state_get([key], scope="")
    assert [e.value if e else None for e in unscoped + empty] == [b"none", b"empty"]


async def test_expired_rows_are_hidden_then_swept(
    pg_broker: PostgresBroker, conn: asyncpg.Connection[Any], upnext_queue: str
) -> None:
    """Expired rows stay unseen until the sweep drops them; renewed ones are kept."""
    gone, kept = f"{upnext_queue}:gone", f"{upnext_queue}:kept"
    await pg_broker.state_put([StateWrite(gone, b"g", 0.05), StateWrite(kept, b"k", 0.05)])
    await pg_broker.state_put([StateWrite(kept, b"k", 60.0)])
    await pg_broker.slots_acquire(gone, "m", limit=1, ttl=0.05)
    await asyncio.sleep(0.2)
    schema = pg_broker.options.schema
    rows = f'SELECT count(*) FROM "{schema}".state WHERE key = ANY($1::text[])'
    members = f'SELECT count(*) FROM "{schema}".state_slots WHERE key = $1'
    assert (await conn.fetchval(rows, [gone, kept]), await conn.fetchval(members, gone)) == (2, 1)
    assert await pg_broker.state_get([gone]) == [None]
    assert [k for k, _ in (await pg_broker.state_scan(upnext_queue)).entries] == [kept]
    await pg_broker._sweep_state()
    assert (await conn.fetchval(rows, [gone, kept]), await conn.fetchval(members, gone)) == (1, 0)


async def test_puts_of_the_same_keys_in_opposite_orders_never_deadlock(
    pg_broker: PostgresBroker, upnext_queue: str
) -> None:
    """Each put locks its keys in key order, so crossing batches wait, never deadlock."""
    keys = [f"{upnext_queue}:{i}" for i in range(8)]

    async def put(n: int) -> list[bool]:
        order = keys if n % 2 else keys[::-1]
        return await pg_broker.state_put([StateWrite(k, str(n).encode(), 60.0) for k in order])

    results = await asyncio.gather(*(put(n) for n in range(16)))
    assert results == [[True] * len(keys)] * 16


async def test_a_refused_absent_write_writes_nothing(
    pg_broker: PostgresBroker, conn: asyncpg.Connection[Any], upnext_queue: str
) -> None:
    """A live entry refuses 'absent' before any insert: no version is drawn, no row touched."""
    key = f"{upnext_queue}:unique"
    await pg_broker.state_put([StateWrite(key, b"first", 60.0)])
    versions = f'SELECT last_value FROM "{pg_broker.options.schema}".state_versions'
    before = await conn.fetchval(versions)
    refused = await pg_broker.state_put([StateWrite(key, b"again", 60.0, "absent")] * 3)
    assert (refused, await conn.fetchval(versions)) == ([False] * 3, before)
