"""Waiting-job pages on SQLite: receive's order, keyset cursors, one index seek a page."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from upnext.broker import Envelope
from upnext.broker.cursor import key_cursor
from upnext.errors import ConfigurationError
from upnext_sqlite import SQLiteBroker, schema


async def test_the_first_listed_jobs_are_the_ones_receive_takes(
    sqlite_broker: SQLiteBroker,
) -> None:
    """An expired lease sorts by its expiry among due jobs, as receive takes it."""
    await sqlite_broker.enqueue_many([Envelope("a", "q", b"x")])
    await sqlite_broker.receive(["q"], limit=1, lease=0.05, wait=1.0)
    await asyncio.sleep(0.1)  # a's lease runs out after b and c were due
    await sqlite_broker.enqueue_many([Envelope("b", "q", b"x"), Envelope("c", "q", b"x")])
    page = await sqlite_broker.waiting_jobs("q", scheduled=False, limit=10)
    got = await sqlite_broker.receive(["q"], limit=10, lease=30.0, wait=1.0)
    assert [j.id for j in page.jobs] == [d.envelope.id for d in got] == ["a", "b", "c"]


async def test_a_cursor_is_a_key_taken_jobs_shift_nothing(sqlite_broker: SQLiteBroker) -> None:
    """Jobs taken between pages, the last one shown among them, skip none of the rest."""
    await sqlite_broker.enqueue_many([Envelope(f"j{i}", "q", b"x") for i in range(6)])
    first = await sqlite_broker.waiting_jobs("q", scheduled=False, limit=2)
    await sqlite_broker.receive(["q"], limit=3, lease=30.0, wait=1.0)
    second = await sqlite_broker.waiting_jobs("q", scheduled=False, limit=2, cursor=first.cursor)
    assert [j.id for j in second.jobs] == ["j3", "j4"]


async def test_a_scheduled_page_skips_live_leases(sqlite_broker: SQLiteBroker) -> None:
    """A held row's due column is its lease's expiry: never listed as scheduled."""
    await sqlite_broker.enqueue_many([Envelope("held", "q", b"x")])
    await sqlite_broker.receive(["q"], limit=1, lease=30.0, wait=1.0)
    await sqlite_broker.enqueue_many([Envelope("later", "q", b"x", 10.0)])
    page = await sqlite_broker.waiting_jobs("q", scheduled=True, limit=10)
    assert [j.id for j in page.jobs] == ["later"]


@pytest.mark.parametrize(
    ("cursor", "scheduled"),
    [
        (key_cursor("sr1.", [1.5, 1]), True),  # a ready cursor for a scheduled page
        (key_cursor("ss1.", [1.5, 1]), False),
        (key_cursor("sr1.", ["1.5", 1]), False),
    ],
)
async def test_cursors_of_another_kind_are_refused(
    sqlite_broker: SQLiteBroker, cursor: str, scheduled: bool
) -> None:
    with pytest.raises(ConfigurationError, match="malformed waiting-jobs cursor"):
        await sqlite_broker.waiting_jobs("q", scheduled=scheduled, limit=1, cursor=cursor)


@pytest.mark.parametrize("sql", [schema.WAITING_READY, schema.WAITING_SCHEDULED])
def test_a_page_is_one_seek_of_the_due_index(sql: str) -> None:
    """No sort, no scan: SQLite walks upnext_jobs_due from the keyset on."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema.SCHEMA)
    args = ("q", time.time(), 1.5, 1) if sql is schema.WAITING_READY else ("q", 1.5, 1)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (*args, 11))]
    assert plan == [plan[0]]
    assert plan[0].startswith("SEARCH upnext_jobs USING INDEX upnext_jobs_due (queue=? AND due>?")
