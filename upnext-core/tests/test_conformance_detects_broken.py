"""The conformance suite catches broken backends, and its machinery works in strict mode.

Each case runs a few suite tests (selected with -k) in a pytester sandbox
against a MemoryBroker wrapper with one deliberate bug, and checks that the
run fails naming the broken guarantee. The sandbox has no ini file, so
pytest-asyncio runs in strict mode there.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable

import pytest

_HEADER = """
import asyncio
import contextlib
import uuid
from dataclasses import replace

import pytest_asyncio

from upnext.broker.memory import MemoryBroker
from upnext.broker.optional import WaitingPage
from upnext.broker.protocol import Capabilities, Delivery, Envelope, Release, Retry
from upnext.errors import BrokerError, DeadLetterNotFound
from upnext.testing import (
    BrokerConformance,
    DeadLetterAdminConformance,
    JobBrowserConformance,
    QueueAdminConformance,
    ResultStoreConformance,
    StateStoreConformance,
)
from upnext.broker.state import SlotGrant, StateEntry
"""

_SUITE = """
class TestSuite(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    JobBrowserConformance,
    StateStoreConformance,
):
    @pytest_asyncio.fixture
    async def broker(self):
        broker = Broken(f"memory://t-{uuid.uuid4().hex}")
        await broker.connect()
        yield broker
        await broker.aclose()
"""


def _released_as(delivery: str) -> str:
    """A memory broker that hands a released job back as `delivery` (an expression of d)."""
    return """
class Broken(MemoryBroker):
    released = set()

    async def settle(self, items):
        self.released |= {i.delivery.envelope.id for i in items if isinstance(i, Release)}
        return await super().settle(items)

    async def receive(self, queues, *, limit, lease, wait):
        got = await super().receive(queues, limit=limit, lease=lease, wait=wait)
        return [DELIVERY if d.envelope.id in self.released else d for d in got]
""".replace("DELIVERY", delivery)


_BROKEN = {
    "retry_delay": """
class Broken(MemoryBroker):
    async def settle(self, items):
        items = [Retry(i.delivery, i.body, 0.0) if isinstance(i, Retry) else i for i in items]
        return await super().settle(items)
""",
    "double_handout": """
class Broken(MemoryBroker):
    async def receive(self, queues, *, limit, lease, wait):
        return await super().receive(queues, limit=limit, lease=0.0, wait=wait)
""",
    "release_counted": _released_as("Delivery(d.envelope, d.receipt, True, d.deliveries + 1)"),
    "release_resets": _released_as("Delivery(d.envelope, d.receipt, False, 1)"),
    "replay_not_atomic": """
class Broken(MemoryBroker):
    async def dlq_replay(self, entry_id, envelope):
        await self.dlq_get(entry_id)
        await asyncio.sleep(0.01)
        await self.enqueue_many([envelope])
        with contextlib.suppress(DeadLetterNotFound):
            await self.dlq_delete(entry_id)
""",
    "half_applied_settle": """
class Broken(MemoryBroker):
    async def settle(self, items):
        outcomes = []
        for item in items:  # one at a time, stopping at the first it cannot store
            result = getattr(item, "result", None)
            if result is not None and result.ttl > 1e9:
                raise BrokerError("ttl out of range")
            outcomes += await super().settle([item])
        return outcomes
""",
    "destructive_get": """
class Broken(MemoryBroker):
    taken = set()

    async def get_result(self, job_id, *, queue, wait):
        if job_id in self.taken:
            await asyncio.sleep(wait)
            return None
        data = await super().get_result(job_id, queue=queue, wait=wait)
        if data is not None:
            self.taken.add(job_id)
        return data
""",
    "state_versions_per_value": """
class Broken(MemoryBroker):
    async def state_get(self, keys, *, scope=None):
        got = await super().state_get(keys, scope=scope)
        return [e and StateEntry(e.value, len(e.value)) for e in got]
""",
    "slots_check_then_act": """
class Broken(MemoryBroker):
    async def slots_acquire(self, key, member, *, limit, ttl, scope=None):
        probe = await super().slots_acquire(key, "probe", limit=None, ttl=0.001, scope=scope)
        await asyncio.sleep(0.01)
        if limit is not None and probe.count - 1 >= limit:
            return await super().slots_acquire(key, member, limit=limit, ttl=ttl, scope=scope)
        return await super().slots_acquire(key, member, limit=None, ttl=ttl, scope=scope)
""",
    "slots_batch_writes_nothing": """
class Broken(MemoryBroker):
    async def slots_acquire_many(self, claims):
        return [SlotGrant(True, 1) for _ in claims]
""",
    "stores_id_twice": """
class Broken(MemoryBroker):
    def __init__(self, url):
        super().__init__(url)
        self.known = set()

    async def enqueue_many(self, envelopes):
        # A repeated id becomes a second job, as the Redis enqueue once did.
        fresh = [
            Envelope(uuid.uuid4().hex, e.queue, e.body, e.delay) if e.id in self.known else e
            for e in envelopes
        ]
        self.known.update(e.id for e in envelopes)
        await super().enqueue_many(fresh)
""",
    "upserts_id": """
class Broken(MemoryBroker):
    async def enqueue_many(self, envelopes):
        # A repeated id replaces a job not yet handed out, as the SQLite upsert did.
        for e in envelopes:
            await self.cancel(e.queue, e.id)
        await super().enqueue_many(envelopes)
""",
    "drops_priority": """
class Broken(MemoryBroker):
    async def receive(self, queues, *, limit, lease, wait):
        # Declares priority levels but stores no priority, as a backend without the column.
        got = await super().receive(queues, limit=limit, lease=lease, wait=wait)
        return [
            Delivery(Envelope(d.envelope.id, d.envelope.queue, d.envelope.body), d.receipt,
                     d.redelivered, d.deliveries)
            for d in got
        ]
""",
    "release_drops_priority": _released_as(
        "Delivery(Envelope(d.envelope.id, d.envelope.queue, d.envelope.body), d.receipt,"
        " d.redelivered, d.deliveries)"
    ),
    "no_capabilities": """
class Broken(MemoryBroker):
    capabilities = Capabilities(
        timed_leases=False, counts_deliveries=False, cancel_queued=False, dlq_access=None
    )
""",
    "dlq_records_inclusive": """
class Broken(MemoryBroker):
    async def dlq_records(self, query):
        return [
            r
            for r in await super().dlq_records(replace(query, before=None, limit=10**6))
            if query.before is None or (r.failed_at, r.id) <= query.before
        ][: query.limit]
""",
    "dlq_records_any_matches": """
class Broken(MemoryBroker):
    async def dlq_records(self, query):
        # The right records in the right order, but not the newest: the oldest `limit`.
        every = await super().dlq_records(replace(query, limit=10**6))
        return every[-query.limit :]
""",
    "dlq_exact_function_only": """
class Broken(MemoryBroker):
    async def dlq_records(self, query):
        # The filter before this release: the whole dotted name only.
        every = await super().dlq_records(replace(query, function=None, limit=10**6))
        return [r for r in every if query.function in (None, r.function)][: query.limit]
""",
    "dlq_newest_entry_per_job": """
class Broken(MemoryBroker):
    async def dlq_records(self, query):
        # An index that keeps one entry per job id: the newest.
        found = await super().dlq_records(query)
        return found[:1] if query.job_id is not None else found
""",
    "waiting_pages_overlap": """
class Broken(MemoryBroker):
    async def waiting_jobs(self, queue, *, scheduled, limit, cursor=None):
        # Each page starts at the previous page's last job, as an inclusive keyset would.
        page = await super().waiting_jobs(queue, scheduled=scheduled, limit=limit, cursor=cursor)
        return WaitingPage(page.jobs, page.cursor and str(int(page.cursor) - 1))
""",
    "sound": """
class Broken(MemoryBroker):
    pass
""",
}


# hypothesis' plugin re-imports hypothesis (~1.5 s) in every inline run; the suite needs none.
_SANDBOX_OPTIONS = (
    *("-p", "no:cacheprovider", "-p", "no:hypothesispytest"),
    *("-o", "asyncio_default_fixture_loop_scope=function"),
)


def _run(pytester: pytest.Pytester, broken: str, select: str, *args: str) -> pytest.RunResult:
    pytester.makeconftest('pytest_plugins = ["upnext.testing.plugin"]')
    source = _HEADER + textwrap.dedent(_BROKEN[broken]) + _SUITE
    pytester.makepyfile(test_suite=source)
    return pytester.runpytest(*_SANDBOX_OPTIONS, "-rs", "-k", select, *args)


@pytest.mark.parametrize(
    ("broken", "select", "guarantee"),
    [
        (
            "retry_delay",
            "test_retry_replaces_body_and_honours_delay",
            "a retried job must not be handed out before its delay",
        ),
        (
            "double_handout",
            "test_concurrent_receivers_never_share_a_job",
            "a job must never be held by two receivers at once",
        ),
        (
            "double_handout",
            "test_lease_hides_job_from_other_receivers",
            "a leased job must be hidden from other receivers",
        ),
        (
            "release_counted",
            "test_release_returns_job_at_once_uncounted",
            "a released job must come back uncounted",
        ),
        (
            "release_resets",
            "test_release_of_a_redelivery_keeps_it_counted",
            "a released redelivery must come back redelivered",
        ),
        (
            "replay_not_atomic",
            "test_dlq_concurrent_replays_one_wins",
            "of two concurrent replays exactly one must win",
        ),
        (
            "dlq_records_inclusive",
            "test_dlq_records_answers_each_query",
            "strictly older than `before`",
        ),
        (
            "dlq_records_inclusive",
            "test_dlq_list_limit_and_cursor",
            "following cursors must yield every record once",
        ),
        (
            "dlq_records_any_matches",
            "test_dlq_records_answers_each_query",
            "the `limit` newest matching records",
        ),
        (
            "dlq_records_any_matches",
            "test_dlq_cursor_stable_under_concurrent_changes",
            "following cursors must not skip a record",
        ),
        (
            "dlq_exact_function_only",
            "test_dlq_function_filter_matches_dotted_suffixes",
            "must match a dotted name whole or by a dotted suffix",
        ),
        (
            "dlq_newest_entry_per_job",
            "test_dlq_records_by_job_id",
            "must find every entry of that job and no other",
        ),
        ("destructive_get", "test_get_is_non_destructive", "(reads are non-destructive)"),
        (
            "state_versions_per_value",
            "test_state_versions_never_repeat",
            "a key's versions must never repeat, even after a delete",
        ),
        (
            "slots_check_then_act",
            "test_slots_hold_their_limit_under_concurrency",
            "never more than `limit` holders",
        ),
        (
            "slots_batch_writes_nothing",
            "test_slots_acquire_many_refreshes_expiries",
            "every claim of a batch must refresh its slot",
        ),
        (
            "stores_id_twice",
            "test_known_id_never_disturbs_a_queued_job",
            "an enqueue with a queued job's id must not add a second copy",
        ),
        (
            "stores_id_twice",
            "test_known_id_never_disturbs_a_scheduled_job",
            "an enqueue with a scheduled job's id must keep its due time",
        ),
        (
            "stores_id_twice",
            "test_known_id_never_disturbs_a_held_job",
            "an enqueue with a held job's id must not hand it out again",
        ),
        (
            "upserts_id",
            "test_known_id_never_disturbs_a_queued_job",
            "an enqueue with a queued job's id must not change its body",
        ),
        (
            "drops_priority",
            "test_priority_travels_to_the_receiver",
            "a delivery must carry the priority its job was enqueued with",
        ),
        (
            "release_drops_priority",
            "test_priority_survives_retry_and_release",
            "a job must keep its priority through Release",
        ),
        (
            "waiting_pages_overlap",
            "test_waiting_cursors_visit_each_job_once",
            "following waiting_jobs cursors must visit every job once",
        ),
        (
            "half_applied_settle",
            "test_a_refused_settle_changes_nothing",
            "a settle batch that raises must have changed nothing",
        ),
    ],
)
def test_suite_names_the_broken_guarantee(
    pytester: pytest.Pytester, broken: str, select: str, guarantee: str
) -> None:
    """A backend with one deliberate bug fails the suite, and the output names the guarantee."""
    result = _run(pytester, broken, select)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*guarantee violated: *{guarantee}*"])


def test_sound_backend_passes_in_strict_mode(pytester: pytest.Pytester) -> None:
    """The unbroken memory broker passes a sample of every class under strict asyncio mode."""
    select = (
        "test_enqueued_jobs_are_received_intact or test_put_then_get_roundtrip"
        " or test_dlq_get or test_queues_lists_a_used_queue or test_extend_prolongs_lease"
    )
    result = _run(pytester, "sound", select, "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=5)


def test_missing_capabilities_skip_with_reason(pytester: pytest.Pytester) -> None:
    """Tests needing a capability the backend does not declare skip, naming it."""
    select = (
        "test_expired_lease_redelivers or test_cancel_of_held or test_dlq_get"
        " or test_known_id_never_disturbs_a_held_job or test_priority_survives_redelivery"
    )
    result = _run(pytester, "no_capabilities", select)
    result.assert_outcomes(skipped=5)
    for reason in [
        "needs capability timed_leases=True; Broken declares timed_leases=False",
        "needs capability cancel_queued=True; Broken declares cancel_queued=False",
        "needs capability dlq_access; Broken declares None",
        "needs capability dedupes_on_enqueue=True; Broken declares dedupes_on_enqueue=False",
        "needs capability priority_levels > 1; Broken declares 1",
    ]:
        result.stdout.fnmatch_lines([f"SKIPPED *{reason}"])


def test_timing_scale_option_and_env(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--upnext-timing-scale (or UPNEXT_TIMING_SCALE) scales the `timing` fixture."""
    pytester.makeconftest('pytest_plugins = ["upnext.testing.plugin"]')
    pytester.makepyfile(
        test_scale="""
        import os

        def test_scale(timing):
            assert timing.scale == float(os.environ["EXPECTED"])
            assert timing.delay(0.5) == timing.tolerance(0.5) == 0.5 * timing.scale
        """
    )
    monkeypatch.setenv("EXPECTED", "2.5")
    pytester.runpytest(*_SANDBOX_OPTIONS, "--upnext-timing-scale=2.5").assert_outcomes(passed=1)
    monkeypatch.setenv("UPNEXT_TIMING_SCALE", "3")
    monkeypatch.setenv("EXPECTED", "3")
    pytester.runpytest(*_SANDBOX_OPTIONS).assert_outcomes(passed=1)
    result = pytester.runpytest(*_SANDBOX_OPTIONS, "--upnext-timing-scale=0")
    result.stderr.fnmatch_lines(["*the upnext timing scale must be positive, got 0.0*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_queue_name_fixtures(upnext_queue: str, upnext_queues: Callable[[int], list[str]]) -> None:
    """upnext_queue is "t-<12 hex>"; upnext_queues(n) gives n more, all distinct."""
    more = upnext_queues(3)
    assert re.fullmatch(r"t-[0-9a-f]{12}", upnext_queue)
    assert len({upnext_queue, *more}) == 4


_OVERRIDES = """
class TestOverrides(TestSuite):
    @pytest.mark.skip(reason="this backend cannot purge everything")
    async def test_dlq_purge_all(self) -> None: ...

    @pytest.mark.asyncio
    async def test_ack_removes_job(self, broker, upnext_queue, timing) -> None:
        assert timing.scale == 1.0
        print("REPLACED-TEST-RAN")
"""


def test_tests_are_overridden_by_name(pytester: pytest.Pytester) -> None:
    """A backend skips or replaces a suite test by defining a method of the same name."""
    pytester.makeconftest('pytest_plugins = ["upnext.testing.plugin"]')
    source = _HEADER + "import pytest\n" + _BROKEN["sound"] + _SUITE + _OVERRIDES
    pytester.makepyfile(test_suite=source)
    select = "TestOverrides and (test_dlq_purge_all or test_ack_removes_job)"
    result = pytester.runpytest(*_SANDBOX_OPTIONS, "-rs", "-s", "-k", select)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*REPLACED-TEST-RAN*", "*this backend cannot purge everything*"])
