"""Optional protocols: what a backend offers beyond `Broker`, declared by implementing them.

Core finds each with ``isinstance`` (they are runtime-checkable) and never
probes a broker for attributes; a backend that lacks one simply does not
implement it, and core answers with a one-line error where a user asked for it.

- `Prefetcher`: the broker takes jobs ahead of `receive` (an AMQP prefetch window).
- `TransactionalEnqueue`: enqueue inside the caller's own database transaction
  (goes with the capability `transactional_enqueue`).
- `SchemaProvider`: the DDL the backend applies at connect (``upnext schema``).
- `ManagementStats`: queue depths from a separate management API
  (``upnext server --management-url``), read by a `QueueStatsReader`.
- `JobBrowser`: the jobs waiting in a queue, ready or scheduled, read without
  taking them (``GET /api/v1/jobs?status=queued``, ``upnext jobs list``).
- `WakeableReceive`: a waiting `receive` can be told to return now, so a
  stopping worker does not wait out its last receive call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from upnext.broker.protocol import Envelope, QueueStats

__all__ = [
    "JobBrowser",
    "ManagementStats",
    "Prefetcher",
    "QueueStatsReader",
    "SchemaProvider",
    "TransactionalEnqueue",
    "WaitingJob",
    "WaitingPage",
    "WakeableReceive",
]


@runtime_checkable
class Prefetcher(Protocol):
    """A broker that takes jobs from its server ahead of `receive`.

    A prefetched job is held by the process as much as a handed-out one: if
    the process dies it comes back redelivered, charged a lost run. Before a
    job that already lost a run starts alone, core asks such a broker to hold
    nothing else.
    """

    async def give_back_prefetched(self) -> None:
        """Give back every job taken ahead of `receive`, uncounted (as by `Release`).

        Take no more until the next `receive`.
        """
        ...


@runtime_checkable
class WakeableReceive(Protocol):
    """A broker whose waiting `receive` calls can be told to return early.

    A worker that stops sets its stop flag, then calls `wake_receivers`: its
    receive call in flight ends within a round trip instead of at the end of
    its wait (up to `upnext._receiving.RECEIVE_SLICE` s). Without it a stop
    still works, a little later.
    """

    async def wake_receivers(self) -> None:
        """Make every `receive` of this broker now in flight return soon.

        Each returns what it has taken (often nothing), exactly as at the end
        of its wait: a woken receive loses nothing and holds nothing back.
        Receives that start after this call are not affected, and a call with
        no receive in flight does nothing.
        """
        ...


@runtime_checkable
class TransactionalEnqueue(Protocol):
    """A broker that can enqueue on the caller's own connection, inside its transaction.

    A broker implementing it declares ``Capabilities(transactional_enqueue=True)``,
    and the reverse (the conformance suite checks both ways). Core calls it for
    ``task.options(connection=conn).submit()``; without it, such a submit
    raises `UnsupportedOperation`.
    """

    async def enqueue_in_transaction(
        self, connection: object, envelopes: Sequence[Envelope]
    ) -> None:
        """Enqueue as `Broker.enqueue_many` does, on `connection` and in its open transaction.

        The jobs exist, and receivers are woken, only if that transaction
        commits; a rollback leaves no trace. A connection of a kind the
        backend cannot use raises `ConfigurationError` naming the kind it
        takes. The caller owns the connection: it is neither committed nor
        closed here.
        """
        ...


@runtime_checkable
class SchemaProvider(Protocol):
    """A backend that keeps tables (or other schema objects) and can say which."""

    def schema_sql(self) -> str:
        """The DDL this broker applies at connect, built from its URL alone (no I/O).

        ``upnext schema --broker URL`` prints it, for teams that run their
        migrations with their own tool.
        """
        ...


@runtime_checkable
class QueueStatsReader(Protocol):
    """Every queue's counts from a source beside the broker connection (an HTTP API)."""

    async def all_stats(self) -> dict[str, QueueStats]:
        """Counts of every queue of this backend the source knows, by upnext queue name.

        Raises `BrokerUnavailable` when the source cannot be reached and
        `BrokerError` when it refuses; messages never contain a password.
        """
        ...

    async def aclose(self) -> None:
        """Close the connections it opened."""
        ...


@runtime_checkable
class ManagementStats(Protocol):
    """A broker whose server reports every queue's depths through a management API.

    ``upnext server --management-url URL`` lists queues and their counts from
    it instead of the broker connection (which may not see every queue, or
    count jobs in flight).
    """

    def management_stats(self, url: str) -> QueueStatsReader:
        """A reader of the management API at `url`; opens nothing.

        Credentials come from `url`, else from the broker's own URL. A URL it
        cannot use raises `ConfigurationError` (with the password hidden).
        """
        ...


@dataclass(frozen=True, slots=True)
class WaitingJob:
    """A job waiting in its queue: ready to hand out, or scheduled for `due_at`.

    `due_at` is a Unix timestamp in seconds by the broker's clock; None for a
    ready job (due now, or a lease that ran out). `body` is core's, as enqueued
    or as the last `Retry` wrote it.
    """

    id: str
    queue: str
    body: bytes
    priority: int = 0
    due_at: float | None = None


@dataclass(frozen=True, slots=True)
class WaitingPage:
    """One page of waiting jobs; `cursor` continues it (None on the last page)."""

    jobs: list[WaitingJob]
    cursor: str | None


@runtime_checkable
class JobBrowser(Protocol):
    """A broker that can show the jobs waiting in a queue without taking them.

    Only for operators' views: it is never on a job's path. A broker that can
    read its queues only by consuming them (RabbitMQ) does not implement it;
    its queues show counts only.
    """

    async def waiting_jobs(
        self, queue: str, *, scheduled: bool, limit: int, cursor: str | None = None
    ) -> WaitingPage:
        """Up to `limit` jobs of `queue` that no receiver holds, in the order they would run.

        `scheduled=False`: the ready ones (due now), in hand-out order as far
        as the broker keeps one. `scheduled=True`: the ones due later,
        soonest first. `cursor` is this method's own, from the previous page
        of the same query; the format is the broker's. Pages are a view of a
        moving queue: a job that moved between two pages may be missed or
        shown twice, never invented. `ConfigurationError` for a cursor the
        broker did not make; `ValueError` for a `limit` below 1.
        """
        ...
