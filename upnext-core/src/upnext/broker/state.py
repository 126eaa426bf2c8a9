"""The state contract: small shared values and counted slots that outlive a job.

Features that coordinate a fleet of workers keep their state here: idempotency
and throttle keys, cron's last fired tick, rate-limit windows, concurrency
slots, paused queues, the worker registry, progress, checkpoints, cancel
markers, batch barriers. One `StateStore` serves them all; each feature is core
policy over it, so a backend implements these six calls once.

Guarantees every implementation keeps:

- Each call is one round trip and durable on return (as durable as the jobs).
- Each item is linearizable on its key; nothing is atomic across keys, so a
  store may spread keys over shards (Redis Cluster) or live beside a broker
  that keeps no state of its own (RabbitMQ with a Redis or PostgreSQL store).
- Time-to-live is judged by the store's own clock; an expired entry or slot
  member is never read, counted or returned by a scan, even before the store
  has reclaimed its space.
- A `version` identifies one write of one key and never repeats for that key,
  even after the key was deleted and written again, so a compare-and-set on a
  version read earlier cannot succeed against a different value.
- Values are opaque bytes of at most `STATE_VALUE_MAX` bytes; core checks the
  size before any I/O.
- `scope`, when given, names the queue the keys belong to: a backend may place
  them beside that queue (a Redis Cluster hash tag, the queue's schema) and,
  where it can, write them in the same transaction as a settle. Keys are unique
  within a scope; the same key in two scopes is two entries.

Errors are the broker contract's: `BrokerUnavailable`, `BrokerError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, runtime_checkable

__all__ = [
    "STATE_VALUE_MAX",
    "Expect",
    "SlotClaim",
    "SlotGrant",
    "StateEntry",
    "StatePage",
    "StateStore",
    "StateWrite",
]

STATE_VALUE_MAX: Final = 64 * 1024
"""The largest value a `StateStore` must keep, in bytes."""

Expect = Literal["any", "absent"] | int
"""What a write requires of its key first: anything, no live entry, or this version."""


@dataclass(frozen=True, slots=True)
class StateEntry:
    """A live value and the version of the write that made it."""

    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class StateWrite:
    """Set `key` to `value` (None deletes it) if its current state meets `expect`.

    `ttl` is in seconds from the write, by the store's clock; None keeps the
    entry until it is overwritten or deleted. A write that sets a value always
    replaces the old entry's ttl.
    """

    key: str
    value: bytes | None
    ttl: float | None = None
    expect: Expect = "any"


@dataclass(frozen=True, slots=True)
class StatePage:
    """Entries whose keys start with a prefix, in key order, and the next page's cursor."""

    entries: list[tuple[str, StateEntry]] = field(default_factory=list)
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class SlotGrant:
    """The answer to `slots_acquire`.

    `acquired`: the member holds a slot now. `count`: live members after the
    call. `retry_after`: when refused, seconds until the earliest member
    expires (the soonest a slot can free up without a release); 0.0 when
    acquired.
    """

    acquired: bool
    count: int
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """One acquire of a `slots_acquire_many` batch: `member` takes or refreshes a slot of `key`.

    The fields mean what `slots_acquire`'s arguments mean.
    """

    key: str
    member: str
    limit: int | None
    ttl: float
    scope: str | None = None


@runtime_checkable
class StateStore(Protocol):
    """Shared key-value state with compare-and-set, and counted slots with TTLs."""

    async def state_get(
        self, keys: Sequence[str], *, scope: str | None = None
    ) -> list[StateEntry | None]:
        """The live entry of each key, in order; None where there is none."""
        ...

    async def state_put(
        self, writes: Sequence[StateWrite], *, scope: str | None = None
    ) -> list[bool]:
        """Apply each write whose `expect` holds; per write, whether it was applied.

        Writes are applied in order, each atomically on its key: a later write
        of the same call sees an earlier one. `expect="absent"` holds when no
        live entry exists (an expired one counts as absent); an `int` holds when
        the live entry has that version. A delete of an absent key with
        `expect="any"` is applied (and changes nothing).
        """
        ...

    async def state_scan(
        self,
        prefix: str,
        *,
        scope: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> StatePage:
        """Live entries whose keys start with `prefix`, in ascending key order.

        At most `limit` per page; `next_cursor` is None after the last page.
        Following cursors never repeats a key and never skips one that was live
        throughout. A cursor this store did not make raises `ConfigurationError`.
        """
        ...

    async def slots_acquire(
        self,
        key: str,
        member: str,
        *,
        limit: int | None,
        ttl: float,
        scope: str | None = None,
    ) -> SlotGrant:
        """Take a slot of `key` for `member` if fewer than `limit` (>= 1) live members hold one.

        Idempotent per member: a member that holds a slot keeps it and its
        expiry is moved to `ttl` seconds from now (acquired, whatever the
        count). `limit=None` never refuses (a barrier counting arrivals).
        Serves concurrency limits (ttl = lease, refreshed by the worker tick),
        sliding-window rate limits (a member per call, ttl = the window) and
        batch barriers.
        """
        ...

    async def slots_acquire_many(self, claims: Sequence[SlotClaim]) -> list[SlotGrant]:
        """`slots_acquire` for each claim, in one round trip; one grant per claim, in order.

        Each claim is atomic on its key exactly as a lone `slots_acquire` is,
        and claims of one key take effect in the order given; nothing is atomic
        across keys. The worker tick refreshes every slot a worker holds with
        one call, so its cost grows with workers, not with slots.
        """
        ...

    async def slots_release(
        self, key: str, members: Sequence[str], *, scope: str | None = None
    ) -> None:
        """Free the slots these members hold; members holding none are ignored."""
        ...
