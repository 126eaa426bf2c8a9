"""`StateStoreConformance`: shared state keeps its versions, expectations, TTLs and slots.

Tests take the `state` fixture (the broker itself unless overridden: a broker
that keeps no state, such as RabbitMQ, pairs with a Redis or PostgreSQL store).
Every key starts with the test's own queue name, and every entry a test leaves
behind carries a short TTL, so runs on a shared server never meet.
"""

from __future__ import annotations

import asyncio

import pytest

from upnext.broker.state import (
    STATE_VALUE_MAX,
    SlotClaim,
    StateEntry,
    StateStore,
    StateWrite,
)
from upnext.errors import ConfigurationError
from upnext.testing._support import Timing, violated

__all__ = ["StateStoreConformance"]

_KEEP = 60.0  # the TTL of entries a test leaves behind


def _value(entry: StateEntry | None) -> bytes | None:
    return None if entry is None else entry.value


class StateStoreConformance:
    """The `StateStore` contract: get/put with compare-and-set and TTL, scans, slots."""

    @pytest.mark.asyncio
    async def test_state_put_then_get(self, state: StateStore, upnext_queue: str) -> None:
        """Written values read back byte for byte, in the order asked; a missing key is None."""
        keys = [f"{upnext_queue}:{i}" for i in range(3)]
        values = [b"\x00\xff" + k.encode() for k in keys]
        writes = [StateWrite(k, v, _KEEP) for k, v in zip(keys, values, strict=True)]
        assert await state.state_put(writes) == [True] * 3, violated("an 'any' write is applied")
        got = await state.state_get([keys[2], f"{upnext_queue}:none", keys[0]])
        assert got[1] is None, violated("state_get of a key never written must be None")
        assert [g.value if g else None for g in (got[2], got[0])] == [values[0], values[2]], (
            violated("state_get must return each key's value, in the order of the keys")
        )

    @pytest.mark.asyncio
    async def test_state_versions_never_repeat(self, state: StateStore, upnext_queue: str) -> None:
        """Each write makes a new version, even after a delete; an old version's CAS fails."""
        key = f"{upnext_queue}:v"
        seen = []
        for value in (b"a", b"b", None, b"c"):
            await state.state_put([StateWrite(key, value, _KEEP)])
            (entry,) = await state.state_get([key])
            assert _value(entry) == value, violated("a put must replace the value, None delete it")
            if entry is not None:
                seen.append(entry.version)
        assert len(set(seen)) == 3, violated(
            "a key's versions must never repeat, even after a delete"
        )
        stale = await state.state_put([StateWrite(key, b"x", _KEEP, expect=seen[0])])
        assert stale == [False], violated("a compare-and-set on a replaced version must fail")

    @pytest.mark.asyncio
    async def test_state_compare_and_set(self, state: StateStore, upnext_queue: str) -> None:
        """`absent` holds only without a live entry; a version only while it is current."""
        key = f"{upnext_queue}:cas"
        first = await state.state_put([StateWrite(key, b"1", _KEEP, expect="absent")] * 2)
        assert first == [True, False], violated(
            "writes of one call apply in order: a second 'absent' write sees the first"
        )
        (entry,) = await state.state_get([key])
        assert entry is not None, violated("an applied 'absent' write must create the entry")
        swap = await state.state_put([StateWrite(key, b"2", _KEEP, expect=entry.version)])
        assert swap == [True], violated("a compare-and-set on the current version must apply")
        delete = await state.state_put([StateWrite(key, None, expect=entry.version)])
        assert delete == [False], violated("a delete expecting a replaced version must fail")
        assert (await state.state_get([key]))[0] is not None, violated("a refused delete keeps")

    @pytest.mark.asyncio
    async def test_state_one_of_concurrent_creates_wins(
        self, state: StateStore, upnext_queue: str
    ) -> None:
        """Of 20 concurrent 'absent' writes of one key, exactly one is applied."""
        key = f"{upnext_queue}:race"

        async def create(n: int) -> bool:
            (ok,) = await state.state_put([StateWrite(key, str(n).encode(), _KEEP, "absent")])
            return ok

        won = await asyncio.gather(*(create(n) for n in range(20)))
        assert won.count(True) == 1, violated("a put is linearizable on its key: one create wins")
        (entry,) = await state.state_get([key])
        assert _value(entry) == str(won.index(True)).encode(), violated(
            "the value kept must be the winner's"
        )

    @pytest.mark.asyncio
    async def test_state_ttl_expires(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """An expired entry reads None and counts as absent; a write without ttl keeps it."""
        short, kept = f"{upnext_queue}:short", f"{upnext_queue}:kept"
        ttl = timing.delay(0.3)
        await state.state_put([StateWrite(short, b"s", ttl), StateWrite(kept, b"k", ttl)])
        await state.state_put([StateWrite(kept, b"k2", None)])
        await asyncio.sleep(ttl + timing.delay(0.3))
        got = await state.state_get([short, kept])
        assert got[0] is None, violated("an entry must not be read after its ttl")
        assert _value(got[1]) == b"k2", violated(
            "a write without ttl must replace the old entry's ttl"
        )
        again = await state.state_put([StateWrite(short, b"n", _KEEP, expect="absent")])
        assert again == [True], violated("an expired entry must count as absent")
        await state.state_put([StateWrite(kept, None)])

    @pytest.mark.asyncio
    async def test_state_scopes_keep_keys_apart(self, state: StateStore, upnext_queue: str) -> None:
        """One key in two scopes is two entries, and a scan sees only its own scope."""
        key = f"{upnext_queue}:k"
        await state.state_put([StateWrite(key, b"a", _KEEP)], scope=f"{upnext_queue}-a")
        await state.state_put([StateWrite(key, b"b", _KEEP)], scope=f"{upnext_queue}-b")
        (a,) = await state.state_get([key], scope=f"{upnext_queue}-a")
        (none,) = await state.state_get([key])
        assert (_value(a), none) == (b"a", None), violated(
            "keys of different scopes must not share an entry"
        )
        page = await state.state_scan(upnext_queue, scope=f"{upnext_queue}-b")
        assert [(k, e.value) for k, e in page.entries] == [(key, b"b")], violated(
            "a scan must list only its scope's entries"
        )

    @pytest.mark.asyncio
    async def test_state_scan_pages_in_key_order(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """Cursors walk every live key under a prefix once, in order; expired keys are skipped."""
        keys = [f"{upnext_queue}:p:{i:02d}" for i in range(25)]
        await state.state_put([StateWrite(k, k.encode(), _KEEP) for k in keys])
        await state.state_put(
            [
                StateWrite(f"{upnext_queue}:q", b"other", _KEEP),
                StateWrite(f"{upnext_queue}:p:gone", b"x", timing.delay(0.1)),
            ]
        )
        await asyncio.sleep(timing.delay(0.3))
        listed: list[str] = []
        cursor = None
        for _ in range(10):
            page = await state.state_scan(f"{upnext_queue}:p:", limit=10, cursor=cursor)
            assert len(page.entries) <= 10, violated("a scan page must hold at most `limit`")
            listed += [k for k, e in page.entries if e.value == k.encode()]
            if (cursor := page.next_cursor) is None:
                break
        assert listed == keys, violated(
            "a scan must list every live key under its prefix, in order"
        )
        with pytest.raises(ConfigurationError):
            await state.state_scan(upnext_queue, cursor="not-a-cursor-of-this-store")

    @pytest.mark.asyncio
    async def test_state_keeps_a_value_of_the_maximum_size(
        self, state: StateStore, upnext_queue: str
    ) -> None:
        """A value of STATE_VALUE_MAX bytes, every byte value among them, reads back whole."""
        value = bytes(range(256)) * (STATE_VALUE_MAX // 256)
        key = f"{upnext_queue}:big"
        assert await state.state_put([StateWrite(key, value, _KEEP)]) == [True]
        (entry,) = await state.state_get([key])
        assert _value(entry) == value, violated(
            f"a value of {STATE_VALUE_MAX} bytes must be kept unchanged"
        )

    @pytest.mark.asyncio
    async def test_slots_respect_their_limit(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """Past `limit` a member is refused with a retry hint; release frees a slot."""
        key, ttl = f"{upnext_queue}:slots", timing.delay(5.0)
        grants = [await state.slots_acquire(key, m, limit=2, ttl=ttl) for m in "abc"]
        assert [g.acquired for g in grants] == [True, True, False], violated(
            "a slot must be refused once `limit` live members hold one"
        )
        assert grants[2].count == 2, violated("a refusal must give the live count")
        assert 0 < grants[2].retry_after <= ttl, violated(
            "a refusal must give the time until the earliest member expires"
        )
        again = await state.slots_acquire(key, "a", limit=2, ttl=ttl)
        assert (again.acquired, again.count) == (True, 2), violated(
            "a holder re-acquires its own slot"
        )
        await state.slots_release(key, ["a", "nobody"])
        freed = await state.slots_acquire(key, "c", limit=2, ttl=ttl)
        assert freed.acquired, violated("a released slot must be free for another member")
        await state.slots_release(key, ["b", "c"])

    @pytest.mark.asyncio
    async def test_slots_expire_unless_refreshed(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A member's slot lapses after its ttl; re-acquiring moves its expiry forward."""
        key, ttl = f"{upnext_queue}:lapse", timing.delay(0.4)
        await state.slots_acquire(key, "kept", limit=2, ttl=ttl)
        await state.slots_acquire(key, "lapsed", limit=2, ttl=ttl)
        await asyncio.sleep(timing.delay(0.25))
        await state.slots_acquire(key, "kept", limit=2, ttl=ttl)
        await asyncio.sleep(timing.delay(0.25))
        grant = await state.slots_acquire(key, "new", limit=2, ttl=ttl)
        assert (grant.acquired, grant.count) == (True, 2), violated(
            "an expired member must not be counted, and a refreshed one must be"
        )
        await state.slots_release(key, ["kept", "new"])

    @pytest.mark.asyncio
    async def test_slots_hold_their_limit_under_concurrency(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """Of 20 members acquiring at once with limit 5, exactly 5 get a slot."""
        key = f"{upnext_queue}:crowd"
        grants = await asyncio.gather(
            *(state.slots_acquire(key, f"m{i}", limit=5, ttl=timing.delay(5.0)) for i in range(20))
        )
        assert sum(g.acquired for g in grants) == 5, violated(
            "slots_acquire is linearizable on its key: never more than `limit` holders"
        )
        await state.slots_release(key, [f"m{i}" for i in range(20)])

    @pytest.mark.asyncio
    async def test_slots_without_limit_count_arrivals(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """With no limit every member is admitted and the count is the number of members."""
        key = f"{upnext_queue}:barrier"
        counts = [
            (await state.slots_acquire(key, m, limit=None, ttl=timing.delay(5.0))).count
            for m in ("a", "b", "a", "c")
        ]
        assert counts == [1, 2, 2, 3], violated(
            "a barrier counts distinct live members (re-acquiring is idempotent)"
        )
        await state.slots_release(key, ["a", "b", "c"])

    @pytest.mark.asyncio
    async def test_slots_acquire_many_grants_each_claim_in_order(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A batch answers each claim as a lone acquire would, in order, across keys and scopes."""
        one, barrier, ttl = f"{upnext_queue}:one", f"{upnext_queue}:all", timing.delay(5.0)
        scope = f"{upnext_queue}-s"
        assert await state.slots_acquire_many([]) == [], violated("an empty batch grants nothing")
        grants = await state.slots_acquire_many(
            [
                SlotClaim(one, "a", 1, ttl),
                SlotClaim(one, "b", 1, ttl),
                SlotClaim(barrier, "a", None, ttl, scope),
                SlotClaim(barrier, "b", None, ttl, scope),
                SlotClaim(one, "a", 1, ttl),
            ]
        )
        assert [(g.acquired, g.count) for g in grants] == [
            (True, 1),
            (False, 1),
            (True, 1),
            (True, 2),
            (True, 1),
        ], violated("each claim of a batch must be granted as `slots_acquire`, in order")
        assert 0 < grants[1].retry_after <= ttl, violated("a refused claim gives a retry hint")
        alone = await state.slots_acquire(barrier, "c", limit=None, ttl=ttl, scope=scope)
        assert alone.count == 3, violated("a batch's slots are the same slots a lone call sees")
        await state.slots_release(one, ["a"])
        await state.slots_release(barrier, ["a", "b", "c"], scope=scope)

    @pytest.mark.asyncio
    async def test_slots_acquire_many_refreshes_expiries(
        self, state: StateStore, upnext_queue: str, timing: Timing
    ) -> None:
        """Re-acquiring held slots in a batch moves each one's expiry forward; others lapse."""
        keys, ttl = [f"{upnext_queue}:r{i}" for i in range(3)], timing.delay(0.4)
        for key in keys:
            await state.slots_acquire(key, "kept", limit=2, ttl=ttl)
            await state.slots_acquire(key, "lapsed", limit=2, ttl=ttl)
        await asyncio.sleep(timing.delay(0.25))
        refreshed = await state.slots_acquire_many([SlotClaim(k, "kept", 2, ttl) for k in keys])
        assert all(g.acquired for g in refreshed), violated("a holder re-acquires its own slot")
        await asyncio.sleep(timing.delay(0.25))
        after = [await state.slots_acquire(k, "new", limit=2, ttl=ttl) for k in keys]
        assert [(g.acquired, g.count) for g in after] == [(True, 2)] * 3, violated(
            "every claim of a batch must refresh its slot, and unrefreshed members lapse"
        )
        for key in keys:
            await state.slots_release(key, ["kept", "new"])
