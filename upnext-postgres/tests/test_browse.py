"""Waiting-job pages on PostgreSQL: receive's order, keyset cursors, index-only plans.

The conformance class proves the contract; these look at what it cannot see.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from upnext.broker.cursor import key_cursor
from upnext.broker.protocol import Envelope
from upnext.errors import ConfigurationError
from upnext_postgres import PostgresBroker
from upnext_postgres._browse import waiting_query
from upnext_postgres.schema import Names


async def _first(broker: PostgresBroker, queue: str, limit: int) -> list[str]:
    page = await broker.waiting_jobs(queue, scheduled=False, limit=limit)
    return [job.id for job in page.jobs]


async def test_the_first_listed_jobs_are_the_ones_receive_takes(
    pg_broker: PostgresBroker, upnext_queue: str
) -> None:
    """Expired leases come first, as receive takes them first; then due jobs in order."""
    q = upnext_queue
    await pg_broker.enqueue_many([Envelope(f"{q}-h{i}", q, b"x") for i in range(2)])
    await pg_broker.receive([q], limit=2, lease=0.05, wait=1.0)
    await pg_broker.enqueue_many([Envelope(f"{q}-{i}", q, b"x") for i in range(3)])
    await asyncio.sleep(0.2)
    for expected in [{f"{q}-h0", f"{q}-h1"}, {f"{q}-0", f"{q}-1"}]:
        assert set(await _first(pg_broker, q, 2)) == expected
        got = await pg_broker.receive([q], limit=2, lease=30.0, wait=1.0)
        assert {d.envelope.id for d in got} == expected
    assert await _first(pg_broker, q, 2) == [f"{q}-2"]


async def test_a_cursor_is_a_key_taken_jobs_shift_nothing(
    pg_broker: PostgresBroker, upnext_queue: str
) -> None:
    """Jobs taken between pages, the last one shown among them, skip none of the rest."""
    q = upnext_queue
    await pg_broker.enqueue_many([Envelope(f"{q}-{i}", q, b"x") for i in range(6)])
    first = await pg_broker.waiting_jobs(q, scheduled=False, limit=2)
    assert [j.id for j in first.jobs] == [f"{q}-0", f"{q}-1"]
    await pg_broker.receive([q], limit=3, lease=30.0, wait=1.0)  # 0, 1 and 2
    second = await pg_broker.waiting_jobs(q, scheduled=False, limit=2, cursor=first.cursor)
    assert [j.id for j in second.jobs] == [f"{q}-3", f"{q}-4"]


@pytest.mark.parametrize(
    ("cursor", "scheduled"),
    [
        (key_cursor("pr1.", [1, 0, 1]), True),  # a ready cursor for a scheduled page
        (key_cursor("ps1.", [0, 1]), False),
        (key_cursor("pr1.", [2, 0, 1]), False),  # no segment 2
        (key_cursor("pr1.", [1, 2**62, 1]), False),  # past datetime's range
        (key_cursor("ps1.", [-(2**62), 1]), True),
    ],
)
async def test_cursors_of_another_kind_or_out_of_range_are_refused(
    pg_broker: PostgresBroker, upnext_queue: str, cursor: str, scheduled: bool
) -> None:
    with pytest.raises(ConfigurationError, match="malformed waiting-jobs cursor"):
        await pg_broker.waiting_jobs(upnext_queue, scheduled=scheduled, limit=1, cursor=cursor)


def _nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    children = plan.get("Plans", [])
    assert isinstance(children, list)
    return [plan, *(node for child in children for node in _nodes(child))]


@pytest.mark.parametrize("scheduled", [False, True])
async def test_a_page_after_a_cursor_is_one_range_of_jobs_ready(
    pg_url: str, pg_broker: PostgresBroker, pg_schema: str, scheduled: bool
) -> None:
    """With a cursor, a page reads a range of the jobs_ready index: no sort, no other scan."""
    cursor = key_cursor("ps1." if scheduled else "pr1.", [*([] if scheduled else [1]), 0, 1])
    sql, args = waiting_query(Names(pg_schema), scheduled=scheduled, cursor=cursor)
    conn = await asyncpg.connect(pg_url.split("?")[0])
    try:
        await conn.execute("SET enable_seqscan = off")
        [row] = await conn.fetch(f"EXPLAIN (FORMAT JSON) {sql}", "q", 11, *args)
    finally:
        await conn.close()
    nodes = _nodes(json.loads(row[0])[0]["Plan"])
    assert [n["Node Type"] for n in nodes] == ["Limit", "Index Scan"]
    assert nodes[1]["Index Name"] == "jobs_ready"
    assert "ROW(due_at, seq) >" in str(nodes[1]["Index Cond"])
