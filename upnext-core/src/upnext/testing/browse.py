"""`JobBrowserConformance`: waiting_jobs() shows the jobs a queue holds, without taking them.

Ready jobs come in hand-out order (FIFO among jobs of one priority), scheduled
ones soonest first with their due time; a held job is in neither list until
its lease runs out; cursors visit a still queue's jobs exactly once. Order
across priorities is not tested.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from upnext.broker.optional import JobBrowser, WaitingJob, WaitingPage
from upnext.broker.protocol import MAX_PRIORITY, Ack, Broker, Envelope
from upnext.errors import ConfigurationError
from upnext.testing._priority import require_priorities
from upnext.testing._support import (
    Timing,
    ack_all,
    make_envelope,
    quantized,
    receive_exactly,
    require,
    violated,
)

__all__ = ["JobBrowserConformance"]

# Long enough that no scheduled job can fall due during a test.
_FAR = 600.0
# Strings no broker makes as a cursor.
_FOREIGN = ["", "not a cursor", "-1", "0" * 400, "\x00\xff"]


def _browser(broker: Broker) -> JobBrowser:
    assert isinstance(broker, JobBrowser), violated(
        f"{type(broker).__name__} must implement JobBrowser to run JobBrowserConformance"
    )
    return broker


async def _page(
    broker: Broker, queue: str, *, scheduled: bool, limit: int = 100, cursor: str | None = None
) -> WaitingPage:
    page = await _browser(broker).waiting_jobs(
        queue, scheduled=scheduled, limit=limit, cursor=cursor
    )
    assert len(page.jobs) <= limit, violated(f"waiting_jobs must return at most limit={limit}")
    return page


async def _ids(broker: Broker, queue: str, *, scheduled: bool) -> list[str]:
    """Ids of one page big enough for any test's queue (it must be the last)."""
    page = await _page(broker, queue, scheduled=scheduled)
    assert page.cursor is None, violated("a page holding every waiting job must be the last")
    return [job.id for job in page.jobs]


async def _pages(broker: Broker, queue: str, *, scheduled: bool, limit: int) -> list[list[str]]:
    """The ids of every page, following cursors (at most 50 pages)."""
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(50):
        page = await _page(broker, queue, scheduled=scheduled, limit=limit, cursor=cursor)
        pages.append([job.id for job in page.jobs])
        if (cursor := page.cursor) is None:
            return pages
    pytest.fail(violated("following waiting_jobs cursors must end with cursor None"))


def _ready(envelope: Envelope) -> WaitingJob:
    return WaitingJob(envelope.id, envelope.queue, envelope.body, envelope.priority, None)


async def _enqueue_one_by_one(broker: Broker, envelopes: list[Envelope]) -> None:
    for envelope in envelopes:
        await broker.enqueue_many([envelope])


class JobBrowserConformance:
    """The `upnext.broker.optional.JobBrowser` contract."""

    @pytest.mark.asyncio
    async def test_waiting_lists_ready_jobs_in_order(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """Ready jobs come whole (id, queue, body, priority, no due time), first in first."""
        envelopes = [make_envelope(upnext_queue) for _ in range(5)]
        await _enqueue_one_by_one(broker, envelopes)
        page = await _page(broker, upnext_queue, scheduled=False)
        assert page.jobs == [_ready(e) for e in envelopes], violated(
            "ready jobs must be listed whole, due_at None, in the order they were enqueued"
        )
        assert page.cursor is None, violated("the page holding the last job must have no cursor")
        assert await _ids(broker, upnext_queue, scheduled=True) == [], violated(
            "a ready job must not be listed as scheduled"
        )
        got = await receive_exactly(broker, [upnext_queue], 5, within=2.0)
        assert {d.envelope.id for d in got} == {e.id for e in envelopes}, violated(
            "waiting_jobs must not take jobs: every listed job is still handed out"
        )
        await ack_all(broker, got)

    @pytest.mark.asyncio
    async def test_waiting_lists_scheduled_jobs_soonest_first(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """Scheduled jobs come soonest first, each with due_at about now + its delay."""
        delays = [_FAR + 30.0, _FAR + 10.0, _FAR + 20.0]
        envelopes = [make_envelope(upnext_queue, delay=d) for d in delays]
        before = time.time()
        await broker.enqueue_many(envelopes)
        after = time.time()
        page = await _page(broker, upnext_queue, scheduled=True)
        by_due = sorted(envelopes, key=lambda e: e.delay)
        assert [j.id for j in page.jobs] == [e.id for e in by_due], violated(
            "scheduled jobs must be listed soonest first"
        )
        tolerance = timing.tolerance(0.5)
        for job, envelope in zip(page.jobs, by_due, strict=True):
            earliest = before + envelope.delay - tolerance
            latest = after + quantized(broker, envelope.delay) + tolerance
            due_at = job.due_at if job.due_at is not None else -math.inf
            assert earliest <= due_at <= latest, violated(
                f"a scheduled job's due_at must be enqueue time + delay: {job.due_at} is "
                f"outside [{earliest:.3f}, {latest:.3f}]"
            )
            assert (job.queue, job.body) == (envelope.queue, envelope.body), violated(
                "a scheduled job must be listed with its queue and body"
            )
        assert await _ids(broker, upnext_queue, scheduled=False) == [], violated(
            "a scheduled job must not be listed as ready"
        )

    @pytest.mark.asyncio
    async def test_waiting_keeps_priorities(self, broker: Broker, upnext_queue: str) -> None:
        """Each listed job carries the priority it was enqueued with."""
        require_priorities(broker)
        ready = [make_envelope(upnext_queue, priority=p) for p in (0, MAX_PRIORITY, 3)]
        later = make_envelope(upnext_queue, delay=_FAR, priority=6)
        await broker.enqueue_many([*ready, later])
        listed = [
            *(await _page(broker, upnext_queue, scheduled=False)).jobs,
            *(await _page(broker, upnext_queue, scheduled=True)).jobs,
        ]
        assert {j.id: j.priority for j in listed} == {e.id: e.priority for e in [*ready, later]}, (
            violated("a waiting job must be listed with the priority it was enqueued with")
        )

    @pytest.mark.asyncio
    async def test_waiting_hides_held_jobs_and_acked_ones(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """A received job is in neither list while held, nor after its Ack."""
        first, second = make_envelope(upnext_queue), make_envelope(upnext_queue)
        await _enqueue_one_by_one(broker, [first, second])
        [held] = await receive_exactly(broker, [upnext_queue], 1, within=2.0)
        assert held.envelope.id == first.id, violated("the first job enqueued is handed out first")
        for state in ("held", "acked"):
            assert await _ids(broker, upnext_queue, scheduled=False) == [second.id], violated(
                f"a {state} job must not be listed as ready; the others must stay"
            )
            assert await _ids(broker, upnext_queue, scheduled=True) == [], violated(
                f"a {state} job must not be listed as scheduled"
            )
            if state == "held":
                assert await broker.settle([Ack(held)]) == [None]

    @pytest.mark.asyncio
    async def test_waiting_shows_an_expired_lease_as_ready(
        self, broker: Broker, upnext_queue: str, timing: Timing
    ) -> None:
        """A job whose lease ran out is ready again (due_at None); taken and acked, it is gone."""
        require(broker, "timed_leases")
        envelope = make_envelope(upnext_queue)
        await broker.enqueue_many([envelope])
        lease = timing.delay(0.3)
        await receive_exactly(broker, [upnext_queue], 1, within=2.0, lease=lease)
        assert await _ids(broker, upnext_queue, scheduled=False) == [], violated(
            "a job under a live lease must not be listed as ready"
        )
        deadline = time.monotonic() + lease + timing.tolerance(1.0)
        listed = (await _page(broker, upnext_queue, scheduled=False)).jobs
        while not listed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            listed = (await _page(broker, upnext_queue, scheduled=False)).jobs
        assert listed == [_ready(envelope)], violated(
            "a job whose lease ran out must be listed as ready, due_at None"
        )
        [again] = await receive_exactly(broker, [upnext_queue], 1, within=2.0)
        assert await broker.settle([Ack(again)]) == [None]
        for scheduled in (False, True):
            assert await _ids(broker, upnext_queue, scheduled=scheduled) == [], violated(
                "an acked job must not be listed"
            )

    @pytest.mark.asyncio
    async def test_waiting_cursors_visit_each_job_once(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """On a still queue, pages of `limit` jobs cover every job once; the last has no cursor."""
        ready = [make_envelope(upnext_queue) for _ in range(7)]
        later = [make_envelope(upnext_queue, delay=_FAR + i) for i in (5, 1, 4, 2, 3, 0)]
        await _enqueue_one_by_one(broker, [*ready, *later])
        for scheduled, jobs, limit, sizes in [
            (False, ready, 3, [3, 3, 1]),
            (False, ready, 7, [7]),
            (True, sorted(later, key=lambda e: e.delay), 2, [2, 2, 2]),
            (True, sorted(later, key=lambda e: e.delay), 4, [4, 2]),
        ]:
            pages = await _pages(broker, upnext_queue, scheduled=scheduled, limit=limit)
            assert [id_ for page in pages for id_ in page] == [e.id for e in jobs], violated(
                "following waiting_jobs cursors must visit every job once, in order"
            )
            assert [len(page) for page in pages] == sizes, violated(
                f"pages must be full up to the last, which has no cursor (limit={limit})"
            )

    @pytest.mark.asyncio
    async def test_waiting_pages_never_invent_jobs(self, broker: Broker, upnext_queue: str) -> None:
        """A page read after jobs were taken and acked does not list them."""
        envelopes = [make_envelope(upnext_queue) for _ in range(6)]
        await _enqueue_one_by_one(broker, envelopes)
        first = await _page(broker, upnext_queue, scheduled=False, limit=2)
        got = await receive_exactly(broker, [upnext_queue], 3, within=2.0)
        await ack_all(broker, got)
        gone = {d.envelope.id for d in got}
        rest: list[str] = []
        cursor = first.cursor
        while cursor is not None:
            page = await _page(broker, upnext_queue, scheduled=False, limit=2, cursor=cursor)
            rest += [job.id for job in page.jobs]
            cursor = page.cursor
        assert set(rest) <= {e.id for e in envelopes} - gone, violated(
            "a page must list only jobs that wait when it is read"
        )

    @pytest.mark.asyncio
    async def test_waiting_lists_only_its_queue(self, broker: Broker, upnext_queue: str) -> None:
        """Jobs of other queues, even of a name that extends this one, never appear."""
        mine = [make_envelope(upnext_queue), make_envelope(upnext_queue, delay=_FAR)]
        others = [f"{upnext_queue}x", f"x{upnext_queue}"]
        await broker.enqueue_many(
            [
                *mine,
                *(make_envelope(q) for q in others),
                *(make_envelope(q, delay=_FAR) for q in others),
            ]
        )
        assert await _ids(broker, upnext_queue, scheduled=False) == [mine[0].id], violated(
            "waiting_jobs must list the ready jobs of its queue only"
        )
        assert await _ids(broker, upnext_queue, scheduled=True) == [mine[1].id], violated(
            "waiting_jobs must list the scheduled jobs of its queue only"
        )

    @pytest.mark.asyncio
    async def test_waiting_of_an_empty_queue_is_an_empty_page(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """A queue never used, or emptied, gives no jobs and no cursor."""
        for scheduled in (False, True):
            page = await _page(broker, upnext_queue, scheduled=scheduled)
            assert page == WaitingPage([], None), violated(
                f"an unknown queue must give an empty page, got {page}"
            )
        await broker.enqueue_many([make_envelope(upnext_queue)])
        got = await receive_exactly(broker, [upnext_queue], 1, within=2.0)
        await ack_all(broker, got)
        for scheduled in (False, True):
            page = await _page(broker, upnext_queue, scheduled=scheduled)
            assert page == WaitingPage([], None), violated(
                f"an emptied queue must give an empty page, got {page}"
            )

    @pytest.mark.asyncio
    async def test_waiting_refuses_a_foreign_cursor(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """A cursor the broker did not make raises ConfigurationError."""
        await broker.enqueue_many(
            [make_envelope(upnext_queue), make_envelope(upnext_queue, delay=_FAR)]
        )
        for cursor in _FOREIGN:
            for scheduled in (False, True):
                try:
                    await _page(broker, upnext_queue, scheduled=scheduled, cursor=cursor)
                except ConfigurationError:
                    continue
                pytest.fail(violated(f"a foreign cursor {cursor!r} must raise ConfigurationError"))

    @pytest.mark.asyncio
    async def test_waiting_refuses_a_limit_below_one(
        self, broker: Broker, upnext_queue: str
    ) -> None:
        """A limit of 0 or less raises ValueError (it could never end a listing)."""
        await broker.enqueue_many([make_envelope(upnext_queue)])
        for limit in (0, -1):
            try:
                await _browser(broker).waiting_jobs(upnext_queue, scheduled=False, limit=limit)
            except ValueError:
                continue
            pytest.fail(violated(f"waiting_jobs(limit={limit}) must raise ValueError"))
