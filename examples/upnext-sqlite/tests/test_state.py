"""State the conformance suite cannot see: brokers sharing a file, old files, SQL edges."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from upnext.broker import StateWrite
from upnext_sqlite import SQLiteBroker
from upnext_sqlite.state import prefix_end

_TOP = chr(0x10FFFF)  # the greatest code point


async def test_two_brokers_on_one_file_keep_the_limits(db_url: str) -> None:
    """Writes from two connections to one file are serialised: one create, three slots."""
    brokers = [SQLiteBroker.from_url(db_url) for _ in range(2)]
    each = list(enumerate(brokers * 5))
    try:
        creates = [b.state_put([StateWrite("k", b"v", expect="absent")]) for _, b in each]
        grants = [b.slots_acquire("s", f"m{i}", limit=3, ttl=60.0) for i, b in each]
        won = await asyncio.gather(*creates)
        taken = await asyncio.gather(*grants)
    finally:
        await asyncio.gather(*(b.aclose() for b in brokers))
    assert sum(ok for (ok,) in won) == 1
    assert sum(g.acquired for g in taken) == 3


async def test_a_file_from_before_the_state_tables_gains_them(db_url: str) -> None:
    """Opening a file made before the state store creates its tables; the jobs stay."""
    sqlite_broker = SQLiteBroker.from_url(db_url)
    await sqlite_broker.connect()
    await sqlite_broker.aclose()
    with sqlite3.connect(sqlite_broker.path) as old:
        old.executescript("DROP TABLE upnext_state; DROP TABLE upnext_slots;")
        old.execute("INSERT INTO upnext_jobs (id, queue, body, due) VALUES ('j', 'q', x'00', 0)")
    try:
        assert await sqlite_broker.state_put([StateWrite("k", b"v")]) == [True]
        assert (await sqlite_broker.stats("q")).ready == 1
    finally:
        await sqlite_broker.aclose()


async def test_expired_rows_are_hidden_then_swept_by_a_write(sqlite_broker: SQLiteBroker) -> None:
    """An expired row is never read; the next write transaction deletes it."""
    await sqlite_broker.state_put([StateWrite("gone", b"g", 0.05)])
    await sqlite_broker.slots_acquire("s", "m", limit=1, ttl=0.05)
    await asyncio.sleep(0.1)
    count = "SELECT (SELECT count(*) FROM upnext_state), (SELECT count(*) FROM upnext_slots)"
    with sqlite3.connect(sqlite_broker.path) as look:
        assert look.execute(count).fetchone() == (1, 1)
        assert await sqlite_broker.state_get(["gone"]) == [None]
        assert (await sqlite_broker.state_scan("")).entries == []
        await sqlite_broker.state_put([StateWrite("other", None)])
        await sqlite_broker.slots_release("s", [])
        await sqlite_broker.slots_acquire("t", "m", limit=1, ttl=60.0)
        assert look.execute(count).fetchone() == (0, 1)


async def test_scopes_and_prefix_edges(sqlite_broker: SQLiteBroker) -> None:
    """The empty scope is not "no scope"; a prefix range ends exactly at the prefix."""
    keys = ["p", "p\x7f", "pé", f"p{_TOP}", f"p{_TOP}z", f"o{_TOP}", "q", "P"]
    await sqlite_broker.state_put([StateWrite(k, b"v") for k in keys])
    await sqlite_broker.state_put([StateWrite("p", b"empty")], scope="")
    assert [k for k, _ in (await sqlite_broker.state_scan("p")).entries] == keys[:5]
    assert [k for k, _ in (await sqlite_broker.state_scan(f"p{_TOP}")).entries] == keys[3:5]
    assert [e.value for e in await sqlite_broker.state_get(["p"], scope="") if e] == [b"empty"]


@pytest.mark.parametrize(
    ("prefix", "end"),
    [("", None), ("ab", "ac"), (f"a{_TOP}", "b"), (_TOP * 2, None), ("\ud7ff", "\ue000")],
)
def test_prefix_end_is_the_least_string_past_the_prefix(prefix: str, end: str | None) -> None:
    """Trailing top code points carry over; surrogates (never in a key) are skipped."""
    assert prefix_end(prefix) == end
