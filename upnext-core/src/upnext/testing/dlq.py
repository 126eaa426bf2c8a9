"""`DeadLetterAdminConformance`: records, core's pages over them, get, replay, delete, purge, count.

Records reach the dead-letter queue as a worker puts them there: through
``settle(DeadLetter(...))``. Every test skips unless the broker declares
`dlq_access`. Records use unique queue and function names, so the tests hold
on a server shared with other data, except `test_dlq_purge_all`, which
removes every entry (override it by name if that is not acceptable).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from upnext.broker.cursor import dead_letter_page
from upnext.broker.dead_letters import DeadLetterQuery
from upnext.broker.protocol import Broker, DeadLetterAdmin, DeadLetterRecord
from upnext.errors import DeadLetterNotFound
from upnext.testing._support import (
    Timing,
    ack_all,
    dead_letter,
    make_envelope,
    make_record,
    new_id,
    receive,
    receive_exactly,
    require_dlq,
    violated,
)

__all__ = ["DeadLetterAdminConformance"]


def _records(queue: str, offsets: Sequence[float], *, function: str) -> list[DeadLetterRecord]:
    # Millisecond timestamps survive any backend's (microsecond) time storage exactly.
    base = round(time.time(), 3)
    return [make_record(queue, failed_at=round(base + o, 3), function=function) for o in offsets]


def _newest_first(records: Sequence[DeadLetterRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.failed_at, r.id), reverse=True)]


async def _all_pages(
    admin: DeadLetterAdmin, *, queue: str, limit: int, cursor: str | None = None
) -> list[DeadLetterRecord]:
    """Follow cursors (from `cursor`) to the end, checking each page's size."""
    out: list[DeadLetterRecord] = []
    for _ in range(100):
        page = await dead_letter_page(admin, queue=queue, limit=limit, cursor=cursor)
        assert len(page.records) <= limit, violated("a page must hold at most `limit` records")
        out += page.records
        if page.next_cursor is None:
            return out
        assert page.records, violated("only the last page may be empty")
        cursor = page.next_cursor
    pytest.fail(violated("following cursors must come to an end"))


async def _not_found(call: Awaitable[object], what: str) -> None:
    try:
        await call
    except DeadLetterNotFound:
        return
    pytest.fail(violated(f"{what} must raise DeadLetterNotFound"))


def _expected(records: Sequence[DeadLetterRecord], query: DeadLetterQuery) -> list[str]:
    older = [r for r in records if query.before is None or (r.failed_at, r.id) < query.before]
    return _newest_first([r for r in older if r.function == query.function])[: query.limit]


class DeadLetterAdminConformance:
    """The `DeadLetterAdmin` contract: keyset records (paged by core), atomic replay."""

    @pytest.mark.asyncio
    async def test_dlq_records_answers_each_query(self, broker: Broker, upnext_queue: str) -> None:
        """dlq_records gives the `limit` newest matches strictly older than `before`."""
        admin = require_dlq(broker)
        function = f"fn-{new_id()}"
        records = _records(upnext_queue, [0, 1, 1, 1, 2, 3, -5], function=function)
        other = _records(upnext_queue, [0.5, 1], function=f"fn-{new_id()}")
        await dead_letter(broker, [*records, *other])
        t1 = records[1].failed_at  # three records share it: ties go by id
        keys = [(r.failed_at, r.id) for r in records]
        # Ids are hex: "" sorts before and "zzzz" after them under any collation.
        befores = [None, *keys, (t1, ""), (t1, "zzzz")]
        for before in befores:
            for limit in (1, 3, 50):
                query = DeadLetterQuery(limit, before, upnext_queue, function)
                got = [r.id for r in await admin.dlq_records(query)]
                assert got == _expected(records, query), violated(
                    "dlq_records must return the `limit` newest matching records strictly "
                    f"older than `before`, newest first ({query})"
                )

    @pytest.mark.asyncio
    async def test_dlq_list_newest_first(self, broker: Broker, upnext_queue: str) -> None:
        """A page holds records newest first by (failed_at, id), as they were stored."""
        admin = require_dlq(broker)
        records = _records(upnext_queue, [0, 1, 1, 1, 2, -5], function=f"fn-{new_id()}")
        await dead_letter(broker, records)
        page = await dead_letter_page(admin, queue=upnext_queue, limit=50)
        assert [r.id for r in page.records] == _newest_first(records), violated(
            "dlq_records must order records newest first by (failed_at, id)"
        )
        by_id = {r.id: r for r in records}
        for stored in page.records:
            assert stored == by_id[stored.id], violated("a stored record must read back as given")
        assert page.next_cursor is None, violated("a complete page must have no next cursor")

    @pytest.mark.asyncio
    async def test_dlq_list_filters(
        self, broker: Broker, upnext_queues: Callable[[int], list[str]]
    ) -> None:
        """Pages filter by queue, by function, and by both."""
        admin = require_dlq(broker)
        (q1, q2), f1, f2 = upnext_queues(2), f"fn-{new_id()}", f"fn-{new_id()}"
        records = [
            *_records(q1, [0, 1], function=f1),
            *_records(q1, [2], function=f2),
            *_records(q2, [3, 4], function=f1),
        ]
        await dead_letter(broker, records)
        cases: list[tuple[str | None, str | None]] = [(q1, None), (q2, None), (None, f1), (q1, f1)]
        for queue, function in cases:
            page = await dead_letter_page(admin, queue=queue, function=function, limit=50)
            wanted = [
                r
                for r in records
                if (queue is None or r.queue == queue)
                and (function is None or r.function == function)
            ]
            assert [r.id for r in page.records] == _newest_first(wanted), violated(
                f"dlq_records(queue={queue}, function={function}) must return exactly its matches"
            )

    @pytest.mark.asyncio
    async def test_dlq_list_limit_and_cursor(self, broker: Broker, upnext_queue: str) -> None:
        """Pages hold `limit` records; following next_cursor yields every record once."""
        admin = require_dlq(broker)
        records = _records(upnext_queue, [0, 1, 2, 3, 3, 4, 5], function="tests.fn")
        await dead_letter(broker, records)
        first = await dead_letter_page(admin, queue=upnext_queue, limit=3)
        assert len(first.records) == 3, violated("dlq_records must fill a page up to `limit`")
        assert first.next_cursor is not None, violated("a page with more after it needs a cursor")
        listed = await _all_pages(admin, queue=upnext_queue, limit=3)
        assert [r.id for r in listed] == _newest_first(records), violated(
            "following cursors must yield every record once, newest first"
        )

    @pytest.mark.asyncio
    async def test_dlq_cursor_stable_under_concurrent_changes(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """Paging while entries are added and deleted never repeats or skips a lasting record."""
        admin = require_dlq(broker)
        records = _records(upnext_queue, [float(i) for i in range(12)], function="tests.fn")
        await dead_letter(broker, records)
        seen: list[str] = []
        page = await dead_letter_page(admin, queue=upnext_queue, limit=3)
        seen += [r.id for r in page.records]
        newer, older = (
            _records(upnext_queue, [20, 21], function="tests.fn"),
            _records(upnext_queue, [-10], function="tests.fn"),
        )
        await dead_letter(broker, [*newer, *older])
        deleted = {seen[0], records[3].id}  # one already listed, one not yet
        for entry_id in deleted:
            await admin.dlq_delete(entry_id)
        if page.next_cursor is not None:
            rest = await _all_pages(admin, queue=upnext_queue, limit=3, cursor=page.next_cursor)
            seen += [r.id for r in rest]
        assert len(seen) == len(set(seen)), violated("following cursors must never repeat a record")
        lasting = {r.id for r in records} - deleted
        assert lasting <= set(seen), violated(
            "following cursors must not skip a record that existed throughout"
        )
        assert set(seen) <= {r.id for r in [*records, *newer, *older]}, violated(
            "dlq_records must return only this queue's records"
        )

    @pytest.mark.asyncio
    async def test_dlq_get(self, broker: Broker, upnext_queue: str) -> None:
        """dlq_get returns the record; an unknown id raises DeadLetterNotFound."""
        admin = require_dlq(broker)
        [record] = _records(upnext_queue, [0], function="tests.fn")
        await dead_letter(broker, [record])
        assert await admin.dlq_get(record.id) == record, violated("dlq_get must return the record")
        await _not_found(admin.dlq_get(new_id()), "dlq_get of an unknown id")

    @pytest.mark.asyncio
    async def test_dlq_replay_enqueues_and_removes(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """dlq_replay enqueues the envelope and removes the entry; a second replay 404s."""
        admin = require_dlq(broker)
        [record] = _records(upnext_queue, [0], function="tests.fn")
        await dead_letter(broker, [record])
        envelope = make_envelope(upnext_queue)
        await admin.dlq_replay(record.id, envelope)
        [got] = await receive_exactly(broker, [upnext_queue], 1, within=timing.tolerance(2.0))
        assert (got.envelope.id, got.envelope.body) == (envelope.id, envelope.body), violated(
            "dlq_replay must enqueue the given envelope"
        )
        await _not_found(admin.dlq_get(record.id), "dlq_get of a replayed entry")
        assert await admin.dlq_count(upnext_queue) == 0, violated("a replayed entry is gone")
        again = make_envelope(upnext_queue)
        await _not_found(admin.dlq_replay(record.id, again), "a second dlq_replay")
        assert await receive(broker, [upnext_queue], wait=timing.delay(0.3)) == [], violated(
            "a failed dlq_replay must not enqueue its envelope"
        )
        await ack_all(broker, [got])

    @pytest.mark.asyncio
    async def test_dlq_concurrent_replays_one_wins(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Of two concurrent replays of one entry exactly one wins; one job is enqueued."""
        admin = require_dlq(broker)
        records = _records(upnext_queue, [0, 1, 2, 3, 4], function="tests.fn")
        await dead_letter(broker, records)
        for record in records:
            racers = [make_envelope(upnext_queue), make_envelope(upnext_queue)]
            outcomes = await asyncio.gather(
                *(admin.dlq_replay(record.id, e) for e in racers), return_exceptions=True
            )
            assert sorted(type(o).__name__ for o in outcomes) == [
                "DeadLetterNotFound",
                "NoneType",
            ], violated(f"of two concurrent replays exactly one must win, got {outcomes}")
        got = await receive_exactly(broker, [upnext_queue], 5, within=timing.tolerance(2.0))
        extra = await receive(broker, [upnext_queue], wait=timing.delay(0.3))
        assert extra == [], violated("concurrent replays of one entry must enqueue one job")
        await ack_all(broker, got + extra)

    @pytest.mark.asyncio
    async def test_dlq_delete(self, broker: Broker, upnext_queue: str, timing: Timing) -> None:
        """dlq_delete removes an entry; deleting or replaying it again raises DeadLetterNotFound."""
        admin = require_dlq(broker)
        [record] = _records(upnext_queue, [0], function="tests.fn")
        await dead_letter(broker, [record])
        await admin.dlq_delete(record.id)
        await _not_found(admin.dlq_get(record.id), "dlq_get of a deleted entry")
        await _not_found(admin.dlq_delete(record.id), "a second dlq_delete")
        envelope = make_envelope(upnext_queue)
        await _not_found(admin.dlq_replay(record.id, envelope), "dlq_replay of a deleted")
        assert await receive(broker, [upnext_queue], wait=timing.delay(0.3)) == [], violated(
            "dlq_replay of a deleted entry must not enqueue its envelope"
        )

    @pytest.mark.asyncio
    async def test_dlq_purge_by_queue(
        self, broker: Broker, upnext_queues: Callable[[int], list[str]]
    ) -> None:
        """dlq_purge(queue) removes that queue's entries only and returns how many."""
        admin = require_dlq(broker)
        q1, q2 = upnext_queues(2)
        await dead_letter(
            broker, [*_records(q1, [0, 1, 2], function="f"), *_records(q2, [0, 1], function="f")]
        )
        assert await admin.dlq_purge(q1) == 3, violated("dlq_purge(queue) must return the count")
        assert await admin.dlq_count(q1) == 0, violated("dlq_purge(queue) must empty the queue")
        assert await admin.dlq_count(q2) == 2, violated("dlq_purge(queue) must spare other queues")
        assert await admin.dlq_purge(q1) == 0, violated("purging an empty queue removes nothing")

    @pytest.mark.asyncio
    async def test_dlq_purge_all(
        self, broker: Broker, upnext_queues: Callable[[int], list[str]]
    ) -> None:
        """dlq_purge() removes every entry of every queue and returns how many."""
        admin = require_dlq(broker)
        q1, q2 = upnext_queues(2)
        await dead_letter(
            broker, [*_records(q1, [0, 1, 2], function="f"), *_records(q2, [0, 1], function="f")]
        )
        assert await admin.dlq_purge() >= 5, violated("dlq_purge() must count what it removed")
        assert await admin.dlq_count(q1) == await admin.dlq_count(q2) == 0, violated(
            "dlq_purge() must remove the entries of every queue"
        )

    @pytest.mark.asyncio
    async def test_dlq_count(
        self, broker: Broker, upnext_queues: Callable[[int], list[str]]
    ) -> None:
        """dlq_count counts the entries of a queue, or of all queues."""
        admin = require_dlq(broker)
        q1, q2 = upnext_queues(2)
        before = await admin.dlq_count()
        records = [*_records(q1, [0, 1, 2], function="f"), *_records(q2, [0], function="f")]
        await dead_letter(broker, records)
        assert await admin.dlq_count(q1) == 3, violated("dlq_count(queue) must count its entries")
        assert await admin.dlq_count() - before == 4, violated("dlq_count() must count them all")
        await admin.dlq_delete(records[0].id)
        assert await admin.dlq_count(q1) == 2, violated("dlq_count must drop deleted entries")

    @pytest.mark.asyncio
    async def test_dlq_function_filter_matches_dotted_suffixes(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """`function` matches the whole dotted name or a dotted suffix of it, nothing else."""
        admin = require_dlq(broker)
        u = new_id()
        names = {
            "whole": f"app.{u}.billing.charge",
            "deeper": f"x.app.{u}.billing.charge",
            "longer_word": f"app.{u}.billing.recharge",
            "prefix_only": f"app.{u}.billing.charge.later",
            "glued": f"app.x{u}.billing.charge",
        }
        records = {
            k: _records(upnext_queue, [i], function=f)[0] for i, (k, f) in enumerate(names.items())
        }
        await dead_letter(broker, list(records.values()))
        cases = {
            f"app.{u}.billing.charge": ["whole", "deeper"],
            f"{u}.billing.charge": ["whole", "deeper"],
            "billing.charge": ["whole", "deeper", "glued"],
            "charge": ["whole", "deeper", "glued"],
            "harge": [],
            f"app.{u}.billing": [],
            f"app.{u}.billing.charge.later": ["prefix_only"],
        }
        for wanted, keys in cases.items():
            page = await dead_letter_page(admin, queue=upnext_queue, function=wanted, limit=50)
            expected = _newest_first([records[k] for k in keys])
            assert [r.id for r in page.records] == expected, violated(
                f"function={wanted!r} must match a dotted name whole or by a dotted suffix"
            )

    @pytest.mark.asyncio
    async def test_dlq_records_by_job_id(
        self, broker: Broker, upnext_queues: Callable[[int], list[str]]
    ) -> None:
        """`job_id` finds every entry of one job (a job id may die twice), in any queue."""
        admin = require_dlq(broker)
        q1, q2 = upnext_queues(2)
        job, other = new_id(), new_id()
        base = round(time.time(), 3)
        first = make_record(q1, failed_at=base, job_id=job, function="tests.fn")
        second = make_record(q1, failed_at=base + 1, job_id=job, function="tests.fn")
        elsewhere = make_record(q2, failed_at=base + 2, job_id=job, function="tests.fn")
        unrelated = make_record(q1, failed_at=base + 3, job_id=other, function="tests.fn")
        for batch in ([first, unrelated], [second], [elsewhere]):
            await dead_letter(broker, batch)  # one job id per settle: it died again later
        cases: list[tuple[str | None, list[DeadLetterRecord]]] = [
            (q1, [first, second]),
            (q2, [elsewhere]),
            (None, [first, second, elsewhere]),
        ]
        for queue, wanted in cases:
            page = await dead_letter_page(admin, queue=queue, job_id=job, limit=50)
            assert [r.id for r in page.records] == _newest_first(wanted), violated(
                f"job_id (queue={queue}) must find every entry of that job and no other"
            )
        first_page = await dead_letter_page(admin, queue=q1, job_id=job, limit=1)
        assert [r.id for r in first_page.records] == [second.id], violated("paging by job_id")
        assert first_page.next_cursor is not None, violated("a second page must follow")
        rest = await dead_letter_page(
            admin, queue=q1, job_id=job, limit=1, cursor=first_page.next_cursor
        )
        assert [r.id for r in rest.records] == [first.id], violated("paging by job_id")
        await admin.dlq_delete(second.id)
        await admin.dlq_replay(first.id, make_envelope(q1))
        page = await dead_letter_page(admin, job_id=job, limit=50)
        assert [r.id for r in page.records] == [elsewhere.id], violated(
            "a deleted or replayed entry must no longer be found by its job id"
        )
        missing = await dead_letter_page(admin, job_id=new_id(), limit=50)
        assert missing.records == [], violated("an unknown job id must find nothing")
        await ack_all(broker, await receive_exactly(broker, [q1], 1, within=10.0))
