"""The `StateStore` of RedisBroker: entries with versions and TTLs, scans, slots.

An entry is a hash {v, ver} with a PEXPIRE, so Redis itself never returns
an expired one; writes are one script per state group (keys.py), which
checks each write's expectation, gives out the version and keeps the
group's scan index. Reads are plain HMGETs, slots a sorted set per key.
On standalone Redis every call is one command or script; on Cluster a call
over unscoped keys of several groups sends one per group, pipelined per
server and run on every server at once (one round trip of wall time);
a batch of slot acquires is one script per claim, pipelined the same way.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

from upnext.broker.cursor import parse_state_cursor, state_cursor
from upnext.broker.state import SlotClaim, SlotGrant, StateEntry, StatePage, StateWrite

from upnext_redis._client import Call, RedisClient
from upnext_redis.keys import STATE_BUCKETS, StateKeys
from upnext_redis.results import ttl_ms
from upnext_redis.state_scripts import STATE_PUT, STATE_SCAN, STATE_SLOTS

__all__ = ["RedisStateStore"]

# A page's triples (key, value, version), as STATE_SCAN returns them.
_Triples = list[tuple[bytes, bytes, bytes]]


def _expect(write: StateWrite) -> str:
    if write.expect == "any":
        return "*"
    if write.expect == "absent":
        return "-"
    return str(int(write.expect))


def _write_args(group: int, write: StateWrite) -> list[Any]:
    ms = 0 if write.ttl is None else ttl_ms(write.ttl)
    # A ttl of zero (or less) keeps nothing: the write is a delete.
    gone = write.value is None or (write.ttl is not None and ms == 0)
    return [group, write.key, _expect(write), ms, "D" if gone else "S", write.value or b""]


def _triples(reply: list[Any]) -> _Triples:
    return [(reply[i], reply[i + 1], reply[i + 2]) for i in range(0, len(reply), 3)]


class RedisStateStore:
    """StateStore calls for a class holding a `RedisClient` as ``_client``."""

    _client: RedisClient

    def _groups(self, keys: Sequence[str], scope: str | None) -> list[tuple[StateKeys, list[int]]]:
        """The state groups of `keys` and the positions of the keys in each, in order."""
        found: dict[str, tuple[StateKeys, list[int]]] = {}
        for i, key in enumerate(keys):
            group = self._client.keys.state(key, scope)
            found.setdefault(group.base, (group, []))[1].append(i)
        return list(found.values())

    async def state_get(
        self, keys: Sequence[str], *, scope: str | None = None
    ) -> list[StateEntry | None]:
        """The live entry of each key, in order; one HMGET per key, pipelined."""
        if not keys:
            return []
        space = self._client.keys
        replies = await self._client.commands(
            [("HMGET", space.state(k, scope).entry(k), "v", "ver") for k in keys]
        )
        return [None if ver is None else StateEntry(v, int(ver)) for v, ver in replies]

    def _put_call(
        self, groups: list[tuple[StateKeys, list[int]]], writes: Sequence[StateWrite]
    ) -> Call:
        keys = [k for g, _ in groups for k in (g.index, g.expiries, g.version)]
        args: list[Any] = [len(groups), *(g.base for g, _ in groups)]
        entries: list[str] = []
        order = sorted((i, n) for n, (_, idx) in enumerate(groups, 1) for i in idx)
        for i, n in order:
            entries.append(groups[n - 1][0].entry(writes[i].key))
            args += _write_args(n, writes[i])
        return STATE_PUT, keys + entries, args

    async def state_put(
        self, writes: Sequence[StateWrite], *, scope: str | None = None
    ) -> list[bool]:
        """Apply each write whose expectation holds, in order: one script (Cluster: per group)."""
        if not writes:
            return []
        groups = self._groups([w.key for w in writes], scope)
        # Standalone: one script for every group. Cluster: one per group (one slot each).
        parts = [groups] if not self._client.cluster else [[g] for g in groups]
        replies = await self._client.eval_many([self._put_call(p, writes) for p in parts])
        applied = [False] * len(writes)
        for part, reply in zip(parts, replies, strict=True):
            positions = sorted(i for _, idx in part for i in idx)
            for i, ok in zip(positions, reply, strict=True):
                applied[i] = bool(ok)
        return applied

    async def state_scan(
        self,
        prefix: str,
        *,
        scope: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> StatePage:
        """Live entries under `prefix` in key order, from each group's index."""
        after = None if cursor is None else parse_state_cursor(cursor).encode()
        limit = max(1, limit)
        low = b"[" + prefix.encode() if prefix else b"-"
        if after is not None and after >= prefix.encode():
            low = b"(" + after
        high = b"(" + prefix.encode() + b"\xff" if prefix else b"+"
        space = self._client.keys
        if scope is not None:
            groups = [space.state_scope(scope)]
        else:
            groups = [space.state_bucket(n) for n in range(STATE_BUCKETS)]
        parts = [groups] if not self._client.cluster else [[g] for g in groups]
        calls: list[Call] = [
            (STATE_SCAN, [g.index for g in p], [limit, low, high, *(g.base for g in p)])
            for p in parts
        ]
        replies = await self._client.eval_many(calls)
        merged = heapq.merge(*(_triples(r) for r in replies), key=lambda t: t[0])
        found = [t for _, t in zip(range(limit + 1), merged, strict=False)]
        entries = [(k.decode(), StateEntry(v, int(ver))) for k, v, ver in found[:limit]]
        more = len(found) > limit
        return StatePage(entries, state_cursor(entries[-1][0]) if more else None)

    async def slots_acquire(
        self,
        key: str,
        member: str,
        *,
        limit: int | None,
        ttl: float,
        scope: str | None = None,
    ) -> SlotGrant:
        """Take (or refresh) `member`'s slot if fewer than `limit` live members hold one."""
        (grant,) = await self.slots_acquire_many([SlotClaim(key, member, limit, ttl, scope)])
        return grant

    async def slots_acquire_many(self, claims: Sequence[SlotClaim]) -> list[SlotGrant]:
        """`slots_acquire` for each claim: one script each, pipelined (one round trip)."""
        if not claims:
            return []
        replies = await self._client.eval_many([self._slots_call(c) for c in claims])
        return [SlotGrant(bool(ok), int(n), int(us) / 1_000_000) for ok, n, us in replies]

    def _slots_call(self, claim: SlotClaim) -> Call:
        slots = self._client.keys.state(claim.key, claim.scope).slots(claim.key)
        ttl_us = max(1, math.ceil(claim.ttl * 1_000_000))
        limit = "" if claim.limit is None else claim.limit
        return STATE_SLOTS, [slots], [claim.member, limit, ttl_us]

    async def slots_release(
        self, key: str, members: Sequence[str], *, scope: str | None = None
    ) -> None:
        """Free these members' slots: one ZREM."""
        if members:
            slots = self._client.keys.state(key, scope).slots(key)
            await self._client.commands([("ZREM", slots, *members)])
