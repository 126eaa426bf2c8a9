"""Core's cursors: the dead-letter format (versioned, validated), its pages, state, key cursors."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import upnext
from upnext.broker.cursor import (
    dead_letter_page,
    dlq_cursor,
    key_cursor,
    parse_dlq_cursor,
    parse_key_cursor,
    parse_state_cursor,
    state_cursor,
)
from upnext.broker.dead_letters import DeadLetterQuery
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import DeadLetterRecord
from upnext.errors import ConfigurationError


def _record(
    entry_id: str, failed_at: float, *, queue: str = "q", function: str = "f"
) -> DeadLetterRecord:
    return DeadLetterRecord(entry_id, f"job-{entry_id}", queue, function, "r", failed_at, b"")


def _ours(payload: object) -> str:
    """A cursor in core's envelope around any JSON (a forged or damaged one)."""
    return "d1." + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("entry_id", "failed_at"),
    [("a/b", 1.5), ("ключ ⚙ \"'", 1_700_000_000.123456), ("", 0.1 + 0.2), ("x" * 300, -3.0)],
)
def test_dlq_cursor_names_the_record_exactly(entry_id: str, failed_at: float) -> None:
    """A cursor gives back the exact (failed_at, id) of its record, and is URL-safe."""
    cursor = dlq_cursor(_record(entry_id, failed_at))
    assert parse_dlq_cursor(cursor) == (failed_at, entry_id)
    assert cursor.startswith("d1.")
    assert set(cursor[3:]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "1.5",
        "1.5/an-id",  # the unversioned format of earlier releases
        "sqlite1:1.5/an-id",  # a cursor a backend made
        "d2." + _ours([1.5, "a"])[3:],  # a version core does not know
        "d1.***",
        "d1.Zm9v=",
        _ours([1.5]),
        _ours(["1.5", "a"]),
        _ours([True, "a"]),
        _ours([1.5, 7]),
        "d1." + base64.urlsafe_b64encode(b'[NaN,"a"]').decode(),
        "d1." + base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
async def test_foreign_dlq_cursor_is_a_configuration_error(cursor: str) -> None:
    """A string core did not make as a cursor is refused with one clear line."""
    with pytest.raises(ConfigurationError) as info:
        await dead_letter_page(MemoryBroker(f"memory://c-{uuid.uuid4().hex}"), cursor=cursor)
    assert str(info.value) == f"malformed dead-letter cursor: {cursor!r}"


def test_a_long_foreign_cursor_is_shown_shortened() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_dlq_cursor("x" * 5000)
    assert len(str(info.value)) < 120


async def test_foreign_cursor_through_the_dlq_api() -> None:
    worker = upnext.Worker("cursor-dlq", broker=f"memory://c-{uuid.uuid4().hex}")
    with pytest.raises(ConfigurationError, match="malformed dead-letter cursor"):
        await worker.dlq.list(cursor="nope")
    await worker.aclose()


class _Recorder:
    """A DeadLetterAdmin whose `dlq_records` answers from a list and records each query."""

    def __init__(self, records: list[DeadLetterRecord]) -> None:
        self.records = records
        self.queries: list[DeadLetterQuery] = []

    async def dlq_records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        self.queries.append(query)
        return query.select(self.records)


async def test_page_asks_one_more_than_a_page_and_passes_filters() -> None:
    """Core asks for limit + 1 records: the extra one only says that a next page exists."""
    store = _Recorder([_record(str(i), float(i)) for i in range(5)])
    page = await dead_letter_page(store, queue="q", function="f", limit=2)  # type: ignore[arg-type]  # only dlq_records is called
    assert [r.id for r in page.records] == ["4", "3"]
    assert store.queries == [DeadLetterQuery(3, None, "q", "f")]
    assert page.next_cursor is not None
    await dead_letter_page(store, limit=2, cursor=page.next_cursor)  # type: ignore[arg-type]
    assert store.queries[-1].before == (3.0, "3")


async def test_last_page_has_no_cursor() -> None:
    store = _Recorder([_record(str(i), float(i)) for i in range(4)])
    first = await dead_letter_page(store, limit=2)  # type: ignore[arg-type]
    last = await dead_letter_page(store, limit=2, cursor=first.next_cursor)  # type: ignore[arg-type]
    assert [r.id for r in last.records] == ["1", "0"]
    assert last.next_cursor is None


@pytest.mark.parametrize("limit", [0, -1])
async def test_a_limit_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await dead_letter_page(MemoryBroker(f"memory://c-{uuid.uuid4().hex}"), limit=limit)


def test_select_filters_orders_and_cuts() -> None:
    """`DeadLetterQuery.select`, the answer of a store read by scan, from records in any order."""
    records = [
        _record("b", 2.0),
        _record("a", 2.0),
        _record("c", 1.0),
        _record("d", 3.0, queue="other"),
        _record("e", 0.5, function="g"),
    ]
    assert [r.id for r in DeadLetterQuery(10).select(records)] == ["d", "b", "a", "c", "e"]
    assert [r.id for r in DeadLetterQuery(2, queue="q").select(records)] == ["b", "a"]
    assert [r.id for r in DeadLetterQuery(10, (2.0, "b")).select(records)] == ["a", "c", "e"]
    assert [r.id for r in DeadLetterQuery(10, function="g").select(records)] == ["e"]


def test_state_cursor_round_trips_any_key() -> None:
    """A state-scan cursor names its last key exactly; a foreign string is refused."""
    for key in ["", "a:b", "ключ/⚙", "x" * 300]:
        assert parse_state_cursor(state_cursor(key)) == key
    for foreign in ["a:b", "k:***", "k:" + "\udcff"]:
        with pytest.raises(ConfigurationError, match="malformed state cursor"):
            parse_state_cursor(foreign)


def test_key_cursor_round_trips_its_key_exactly() -> None:
    """A key cursor gives back its ints, floats and strings exactly, and is URL-safe."""
    shape = (int, float, str)
    keys: list[list[int | float | str]] = [
        [0, 0.1 + 0.2, ""],
        [2**63 - 1, -1e300, "ключ/⚙ \"'"],
        [-(2**63), 7.0, "x" * 300],
    ]
    for key in keys:
        cursor = key_cursor("t1.", key)
        assert parse_key_cursor(cursor, "t1.", shape, "test") == key
        assert set(cursor[3:]) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    assert isinstance(parse_key_cursor(key_cursor("t1.", [1, 2, "a"]), "t1.", shape, "t")[1], float)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        key_cursor("t2.", [1, 1.5, "a"]),  # another tag
        key_cursor("t1.", [1, 1.5]),  # too short
        key_cursor("t1.", [1, 1.5, "a", 2]),  # too long
        key_cursor("t1.", [True, 1.5, "a"]),
        key_cursor("t1.", [1.0, 1.5, "a"]),
        key_cursor("t1.", [2**63, 1.5, "a"]),
        key_cursor("t1.", [1, "1.5", "a"]),
        key_cursor("t1.", [1, 1.5, 3]),
        "t1." + base64.urlsafe_b64encode(b'[1,NaN,"a"]').decode(),
        "t1." + base64.urlsafe_b64encode(b'{"a":1}').decode(),
        "t1.***",
        "t1." + "x" * 5000,
    ],
)
def test_foreign_key_cursor_is_a_configuration_error(cursor: str) -> None:
    """Anything but a key cursor of the tag and shape asked for is refused in one short line."""
    with pytest.raises(ConfigurationError, match=r"^malformed waiting-jobs cursor: ") as info:
        parse_key_cursor(cursor, "t1.", (int, float, str), "waiting-jobs")
    assert len(str(info.value)) < 120
