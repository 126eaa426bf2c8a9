"""The `StateStore` of the ``memory://`` backend: shared state for one process.

Entries and slots live in dicts under one lock, so the store is safe from the
several event loops a process may run (the sync twins use a background loop).
Expiry is judged by `time.monotonic`; expired items are dropped when next seen.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from upnext.broker.cursor import parse_state_cursor, state_cursor
from upnext.broker.state import SlotClaim, SlotGrant, StateEntry, StatePage, StateWrite

__all__ = ["MemoryStateStore"]

_Key = tuple[str | None, str]


@dataclass(slots=True)
class _Entry:
    value: bytes
    version: int
    expires: float | None

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now


class MemoryStateStore:
    """Key-value state with compare-and-set, and slots, for everything in this process."""

    def __init__(self) -> None:
        self._state_lock = threading.Lock()
        self._entries: dict[_Key, _Entry] = {}
        self._slots: dict[_Key, dict[str, float]] = {}
        # One counter for every key: a version never repeats, even after a delete.
        self._versions = itertools.count(1)

    def _live(self, key: _Key, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and not entry.live(now):
            del self._entries[key]
            return None
        return entry

    async def state_get(
        self, keys: Sequence[str], *, scope: str | None = None
    ) -> list[StateEntry | None]:
        """The live entry of each key, in order."""
        now = time.monotonic()
        with self._state_lock:
            found = [self._live((scope, key), now) for key in keys]
        return [None if e is None else StateEntry(e.value, e.version) for e in found]

    async def state_put(
        self, writes: Sequence[StateWrite], *, scope: str | None = None
    ) -> list[bool]:
        """Apply each write whose expectation holds, in order."""
        now = time.monotonic()
        applied = []
        with self._state_lock:
            for write in writes:
                key = (scope, write.key)
                current = self._live(key, now)
                if write.expect == "absent":
                    ok = current is None
                elif write.expect == "any":
                    ok = True
                else:
                    ok = current is not None and current.version == write.expect
                if ok and write.value is None:
                    self._entries.pop(key, None)
                elif ok and write.value is not None:
                    expires = None if write.ttl is None else now + write.ttl
                    self._entries[key] = _Entry(write.value, next(self._versions), expires)
                applied.append(ok)
        return applied

    async def state_scan(
        self,
        prefix: str,
        *,
        scope: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> StatePage:
        """Live entries under `prefix` in key order, `limit` at a time."""
        after = None if cursor is None else parse_state_cursor(cursor)
        now = time.monotonic()
        with self._state_lock:
            keys = sorted(
                key
                for (entry_scope, key) in list(self._entries)
                if entry_scope == scope
                and key.startswith(prefix)
                and (after is None or key > after)
                and self._live((scope, key), now) is not None
            )
            page = [(key, self._entries[(scope, key)]) for key in keys[:limit]]
        entries = [(key, StateEntry(e.value, e.version)) for key, e in page]
        more = len(keys) > limit
        return StatePage(entries, state_cursor(entries[-1][0]) if more and entries else None)

    def _members(self, key: _Key, now: float) -> dict[str, float]:
        members = self._slots.setdefault(key, {})
        for member in [m for m, until in members.items() if until <= now]:
            del members[member]
        return members

    async def slots_acquire(
        self,
        key: str,
        member: str,
        *,
        limit: int | None,
        ttl: float,
        scope: str | None = None,
    ) -> SlotGrant:
        """Take (or refresh) `member`'s slot when fewer than `limit` live members hold one."""
        with self._state_lock:
            return self._acquire(SlotClaim(key, member, limit, ttl, scope), time.monotonic())

    async def slots_acquire_many(self, claims: Sequence[SlotClaim]) -> list[SlotGrant]:
        """`slots_acquire` for each claim, in order."""
        now = time.monotonic()
        with self._state_lock:
            return [self._acquire(claim, now) for claim in claims]

    def _acquire(self, claim: SlotClaim, now: float) -> SlotGrant:
        members = self._members((claim.scope, claim.key), now)
        if claim.member in members or claim.limit is None or len(members) < claim.limit:
            members[claim.member] = now + claim.ttl
            return SlotGrant(True, len(members))
        retry_after = min(members.values(), default=now) - now
        return SlotGrant(False, len(members), max(retry_after, 0.0))

    async def slots_release(
        self, key: str, members: Sequence[str], *, scope: str | None = None
    ) -> None:
        """Free these members' slots."""
        with self._state_lock:
            held = self._slots.get((scope, key))
            if held is None:
                return
            for member in members:
                held.pop(member, None)
            if not held:
                del self._slots[(scope, key)]
