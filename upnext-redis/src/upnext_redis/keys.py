"""Every Redis key and channel name the backend uses, in one place.

All keys of a queue live under one hash tag, ``<prefix>:{<queue>}:...``, so
on Redis Cluster a queue's jobs, leases, dead letters and results share a
slot and one Lua script can touch all of them. Per queue:

=================  ======  =====================================================
key                type    holds
=================  ======  =====================================================
``ready``          list    ids of jobs due now, handed out from the head
``delayed``        zset    id -> due time (ms, Redis clock)
``leased``         zset    id -> lease deadline (ms, Redis clock)
``jobs``           hash    id -> body
``count``          hash    id -> hand-outs since the body was last written
``token``          hash    id -> receipt of the current hand-out
``seq``            string  receipt counter
``wake``           stream  one entry, re-added whenever work appears
``dlq``            zset    entry id -> failed_at (s); the dead-letter index
``dlq:rec``        hash    entry id -> packed record
``dlq:fn``         hash    entry id -> function (filtering without unpacking);
                           NUL + job id -> the job's entry ids, NUL-separated
``prio``           hash    id -> priority, only for a non-zero one; gone with the body
``result:<job>``   string  a final result, with a TTL
=================  ======  =====================================================

Outside any queue: ``<prefix>:queues`` (set of queue names, for admin
listing) and the pub/sub channels ``...:done:<job>`` (a result was written)
and ``<prefix>:listener`` (keeps the listener's connection subscribed).

State (the `StateStore`) lives in groups: a scoped key beside its queue,
``<prefix>:{<scope>}:state:...``; an unscoped key in one of `STATE_BUCKETS`
groups ``<prefix>:state:{<n>}:...`` chosen by a CRC32 of the key, so on
Cluster unscoped state spreads over up to that many slots. Per group:
``idx`` (zset, score 0: every key, for lexicographic scans), ``ttl`` (zset:
key -> expiry in microseconds, Redis clock, for reaping ``idx``), ``ver``
(string: the highest version given out), ``e:<key>`` (hash {v, ver}, with a
PEXPIRE) and ``s:<key>`` (zset: member -> slot expiry in microseconds).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from upnext.errors import ConfigurationError

__all__ = ["GROUP_SIZE", "STATE_BUCKETS", "KeySpace", "QueueKeys", "StateKeys"]

# The order is the layout of KEYS in every queue script (scripts.py, dlq_scripts.py).
_SUFFIXES = (
    "ready",
    "delayed",
    "leased",
    "jobs",
    "count",
    "token",
    "seq",
    "wake",
    "dlq",
    "dlq:rec",
    "dlq:fn",
    "prio",
)
GROUP_SIZE = len(_SUFFIXES)
# Groups of unscoped state: more spread it over more Cluster slots, and an
# unscoped scan reads one index per group (a fixed layout: changing it loses state).
STATE_BUCKETS = 16


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue, in script order."""

    base: str
    # Every structural key of the queue, in the order scripts expect: built
    # once (KeySpace keeps these objects), as every script call passes it.
    group: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", tuple(f"{self.base}{s}" for s in _SUFFIXES))

    @property
    def wake(self) -> str:
        """The stream receivers block on."""
        return f"{self.base}wake"

    @property
    def dlq_records(self) -> str:
        """The hash of packed dead-letter records."""
        return f"{self.base}dlq:rec"

    @property
    def dlq_fn(self) -> str:
        """The hash of dead-letter functions by entry id, and entry ids by NUL + job id."""
        return f"{self.base}dlq:fn"

    @property
    def dlq_index(self) -> str:
        """The dead-letter sorted set scored by failed_at."""
        return f"{self.base}dlq"

    def result(self, job_id: str) -> str:
        """The key of a job's result."""
        return f"{self.base}result:{job_id}"

    def result_channel(self, job_id: str) -> str:
        """The pub/sub channel announcing a job's result."""
        return f"{self.base}done:{job_id}"


@dataclass(frozen=True, slots=True)
class StateKeys:
    """The keys of one state group (one scope, or one bucket of unscoped keys)."""

    base: str

    @property
    def index(self) -> str:
        """Every key of the group, score 0, for ZRANGEBYLEX."""
        return f"{self.base}idx"

    @property
    def expiries(self) -> str:
        """Keys with a TTL, scored by their expiry (microseconds, Redis clock)."""
        return f"{self.base}ttl"

    @property
    def version(self) -> str:
        """The highest version the group has given out."""
        return f"{self.base}ver"

    def entry(self, key: str) -> str:
        """The hash {v, ver} holding `key`'s entry."""
        return f"{self.base}e:{key}"

    def slots(self, key: str) -> str:
        """The sorted set of `key`'s slot members, scored by expiry."""
        return f"{self.base}s:{key}"


class KeySpace:
    """Builds key names under one prefix (default ``upnext``)."""

    def __init__(self, prefix: str = "upnext") -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"Redis key prefix must be non-empty and free of braces, got {prefix!r}"
            )
        self.prefix = prefix
        self._cache: dict[str, QueueKeys] = {}

    def queue(self, name: str) -> QueueKeys:
        """The keys of queue `name` (all under the hash tag ``{name}``)."""
        keys = self._cache.get(name)
        if keys is None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            keys = self._cache[name] = QueueKeys(f"{self.prefix}:{{{name}}}:")
        return keys

    def state(self, key: str, scope: str | None) -> StateKeys:
        """The state group of `key`: its scope's (beside that queue), else its bucket's."""
        if scope is not None:
            return self.state_scope(scope)
        return self.state_bucket(zlib.crc32(key.encode()) % STATE_BUCKETS)

    def state_scope(self, scope: str) -> StateKeys:
        """The state group of `scope`, beside the queue of that name (same hash tag)."""
        return StateKeys(f"{self.queue(scope).base}state:")

    def state_bucket(self, n: int) -> StateKeys:
        """Bucket `n` of the unscoped state (its own hash tag ``{n}``)."""
        return StateKeys(f"{self.prefix}:state:{{{n}}}:")

    @property
    def queues(self) -> str:
        """The set of every queue name seen."""
        return f"{self.prefix}:queues"

    @property
    def listener_channel(self) -> str:
        """A channel nobody publishes to; keeps the listener subscribed."""
        return f"{self.prefix}:listener"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this prefix."""
        return f"{_glob_escape(self.prefix)}:*"


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
