"""The broker contract: what a backend implements, and what it guarantees.

A backend moves opaque bytes and keeps them safe; every policy (retries,
backoff, timeouts, hooks, serialization, attempt history, dead-letter record
content) lives in core. A backend is one object that implements `Broker` and,
usually, `ResultStore`, `DeadLetterAdmin` and `QueueAdmin` too, plus any of
the optional protocols of `upnext.broker.optional` it offers. It is built by
a factory found through the `upnext.brokers` / `upnext.result_stores` entry
point groups, called as ``factory(url)``. What it offers beyond the mandatory
contract it declares in `Capabilities` or by implementing a protocol: core
never probes a broker for attributes.

Errors: a backend raises only `BrokerUnavailable` (cannot reach the server),
`LeaseLost` (reported per item, never raised for a whole batch) and
`BrokerError` (anything else the server refused), mapping driver errors at
its boundary; plus, where stated, `Busy`, `DeadLetterNotFound`,
`ConfigurationError` (bad URL options) and
`UnsupportedOperation` (an operation behind a capability it lacks; core checks
capabilities first). Messages never contain a password.

Time: every due time and lease is judged by the broker's own clock (Redis
``TIME``, PostgreSQL ``now()``, RabbitMQ TTL), never the producer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from upnext.broker.capabilities import Capabilities
from upnext.broker.dead_letters import DeadLetterQuery
from upnext.broker.optional import Prefetcher
from upnext.errors import LeaseLost

__all__ = [
    "MAX_PRIORITY",
    "Ack",
    "Broker",
    "Capabilities",
    "DeadLetter",
    "DeadLetterAdmin",
    "DeadLetterPage",
    "DeadLetterQuery",
    "DeadLetterRecord",
    "Delivery",
    "Envelope",
    "Prefetcher",
    "QueueAdmin",
    "QueueStats",
    "Release",
    "ResultStore",
    "ResultWrite",
    "Retry",
    "SettleItem",
    "SettleOutcome",
]


MAX_PRIORITY = 9  # 0 (the default) to 9, higher first: ten levels, as RabbitMQ advises


@dataclass(frozen=True, slots=True)
class Envelope:
    """One job on the wire: its id, its queue, core's opaque body, a delay, a priority.

    `delay` is in seconds from when the broker accepts the envelope, measured
    by the broker's clock. `id` is the job id and is unique per job: an
    envelope repeating the id of a job not yet settled changes nothing (see
    `Broker.enqueue_many`). `priority` (0 to `MAX_PRIORITY`, checked by core)
    stays with the job through `Retry`, `Release` and redelivery when the
    backend declares `priority_levels` > 1.
    """

    id: str
    queue: str
    body: bytes
    delay: float = 0.0
    priority: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class Delivery:
    """An envelope handed to one receiver under a lease.

    `receipt` is the backend's own token for settling it. `redelivered` is
    exact: True if and only if this body was handed out before and that
    hand-out ended without a settle (worker died, lease expired, connection
    lost). `deliveries` counts hand-outs since the body was last written
    (enqueue or `Retry`), this one included; None where the broker cannot
    count.
    """

    envelope: Envelope
    receipt: object
    redelivered: bool = False
    deliveries: int | None = None


@dataclass(frozen=True, slots=True)
class ResultWrite:
    """A final result to store: `data` is core's compact result encoding.

    Kept for `ttl` seconds. `queue` is the job's queue (a backend may keep
    results beside the queue, e.g. under one Redis Cluster hash tag).
    `reply_to` is the address `reply_address()` gave the producer (None when
    it gave none).
    """

    job_id: str
    queue: str
    data: bytes
    ttl: float
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A dead-letter entry: indexed fields plus core's opaque `data`.

    `failed_at` is a Unix timestamp in seconds. Listing orders by
    ``(failed_at, id)`` descending.
    """

    id: str
    job_id: str
    queue: str
    function: str
    reason: str
    failed_at: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """Remove the delivery for good; write `result` in the same atomic step."""

    delivery: Delivery
    result: ResultWrite | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Replace the body and make the job due again after `delay` seconds.

    The job keeps its id, queue and priority. The hand-out counter restarts:
    the next delivery has `redelivered=False` and `deliveries == 1`.
    """

    delivery: Delivery
    body: bytes
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Remove the delivery and store `record` in the dead-letter queue, atomically."""

    delivery: Delivery
    record: DeadLetterRecord
    result: ResultWrite | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """Give the job back at once, unchanged, as if this hand-out never happened.

    Not counted: the next delivery reports what it would have reported had
    this one not been made (`redelivered=False` after a first hand-out).
    """

    delivery: Delivery


SettleItem = Ack | Retry | DeadLetter | Release
SettleOutcome = LeaseLost | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue; None where the broker cannot tell (estimates without `exact_stats`)."""

    ready: int | None
    scheduled: int | None
    in_flight: int | None
    dead: int | None


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """One page of dead-letter records, newest first, and the cursor of the next."""

    records: list[DeadLetterRecord] = field(default_factory=list)
    next_cursor: str | None = None


@runtime_checkable
class Broker(Protocol):
    """Moves jobs between producers and workers, at least once.

    Guarantees: an enqueued envelope is handed out until it is settled by
    `Ack`, `Retry`, `DeadLetter` or `cancel`; a job is never held by two
    receivers at once while a lease is live; settle items each take effect
    atomically or report `LeaseLost`.
    """

    capabilities: Capabilities

    async def connect(self) -> None:
        """Open connections (idempotent). Raises `BrokerUnavailable` on failure."""
        ...

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Store every envelope durably before returning, in one round trip.

        Each becomes due `delay` seconds after the broker accepts it. An
        immediate job wakes a blocked receiver at once.

        With `dedupes_on_enqueue`, an envelope whose id names a job of its
        queue not yet settled (queued, scheduled or held) changes nothing:
        not its body, due time, lease or count, and no second copy is kept;
        within one batch the first envelope of an id wins. Once the job is
        settled its id is free again. Without the capability a repeated id
        is stored as a second job.
        """
        ...

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Hand out up to `limit` due jobs from `queues`, each hidden for `lease` s.

        Blocks at most `wait` seconds when nothing is due, returning early
        when a job arrives, and within 0.15 s of a delayed job falling due (its
        delay rounded up to `delay_quantum`). Returns an empty list on timeout.
        Never busy-polls.

        May be a plain call: core never cancels a receive. It asks with a
        `wait` of at most 0.25 s, so a stopping worker never waits long for
        one; when it no longer wants the jobs (the worker stops, or a job on
        its last chance is about to run alone) it lets the call return and
        gives back whatever it handed out with `Release`, at once. Only a call
        still running 2 s past its `wait` (a server that stopped answering) is
        cancelled, as a last resort: what it took comes back when its lease
        ends.
        """
        ...

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Apply a batch, returning per item None (done) or `LeaseLost`.

        One round trip; each item atomic (its result written in the same step
        when this broker is also the result store). An item whose lease
        expired, whose job another receiver now holds, or that was already
        settled, reports `LeaseLost` and changes nothing. A job whose lease
        expired is runnable again within lease + 0.5 s. A batch that raises
        has changed nothing. (`checked_settles` and `atomic_settles` state
        what a broker declaring them False guarantees instead.)
        """
        ...

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
        """Push every lease to `lease` s from now, in one call; LeaseLost per lost one."""
        ...

    async def cancel(self, queue: str, job_id: str) -> bool:
        """Remove a job that is queued or scheduled and not held; True if removed."""
        ...

    async def aclose(self) -> None:
        """Close connections. Unsettled deliveries come back as redeliveries.

        A later call on the same object opens connections again.
        """
        ...


@runtime_checkable
class ResultStore(Protocol):
    """Keeps final results for waiters; reads are non-destructive."""

    async def connect(self) -> None:
        """Open connections (idempotent). Raises `BrokerUnavailable` on failure."""
        ...

    def reply_address(self) -> str | None:
        """Where results for this process should be sent, or None if not needed."""
        ...

    async def put_results(self, writes: Sequence[ResultWrite]) -> None:
        """Store each result for its ttl and wake its waiters, in one round trip."""
        ...

    async def get_result(self, job_id: str, *, queue: str, wait: float) -> bytes | None:
        """The stored result of a job of `queue`, waiting up to `wait` s; None if none yet.

        Every waiter of a process shares one listener; a waiter never holds a
        connection. Cancelling the call touches nothing but the wait.
        """
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...


@runtime_checkable
class DeadLetterAdmin(Protocol):
    """Store and manage the dead-letter queue (`Busy` while another admin holds a scan).

    Core does paging, cursors and limits over `dlq_records`.
    """

    async def dlq_records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """The `query.limit` newest records that `query` matches, newest first.

        Newest first by ``(failed_at, id)``, ties in `failed_at` broken by id
        in one fixed string order (`DeadLetterQuery.select` uses Python's).
        Only records strictly older than `query.before` are returned, and none
        that matches is left out ahead of the last one returned: so the pages
        core builds never repeat or skip a record, whatever is added or
        removed between them. Records read back exactly as written. A store
        read by scan answers with `query.select(every record)`.
        """
        ...

    async def dlq_get(self, entry_id: str) -> DeadLetterRecord:
        """One record; raises `DeadLetterNotFound` if absent."""
        ...

    async def dlq_replay(self, entry_id: str, envelope: Envelope) -> None:
        """Enqueue `envelope` and remove the entry, atomically where possible.

        Of two concurrent replays exactly one succeeds; the other raises
        `DeadLetterNotFound`, as does replaying a removed entry.
        """
        ...

    async def dlq_delete(self, entry_id: str) -> None:
        """Remove an entry; raises `DeadLetterNotFound` if absent."""
        ...

    async def dlq_purge(self, queue: str | None = None) -> int:
        """Remove every entry (of `queue`, if given); returns how many."""
        ...

    async def dlq_count(self, queue: str | None = None) -> int:
        """How many entries (of `queue`, if given)."""
        ...


@runtime_checkable
class QueueAdmin(Protocol):
    """Inspect and empty queues."""

    async def queues(self) -> list[str]:
        """Names of the queues this broker knows of."""
        ...

    async def stats(self, queue: str) -> QueueStats:
        """Ready, scheduled, in-flight and dead counts of one queue."""
        ...

    async def purge(self, queue: str) -> int:
        """Drop every ready and scheduled job of `queue`; returns how many."""
        ...
