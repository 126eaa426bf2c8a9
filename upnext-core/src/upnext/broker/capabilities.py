"""`Capabilities`: what a backend offers beyond the mandatory contract, and what it lacks.

A backend declares them once, as its `capabilities` attribute; core reads them
before it acts and the conformance suite gates its tests on them (see
docs/writing-a-backend.md, "Capabilities").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Capabilities"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do beyond the mandatory contract.

    - `timed_leases`: a lease expires after `lease` seconds and the job becomes
      runnable again; `extend` prolongs it.
    - `counts_deliveries`: `Delivery.deliveries` is an exact count.
    - `cancel_queued`: `cancel()` can remove a job that has not started.
    - `dlq_access`: "indexed" (list/get by index), "scan" (the admin reads the
      dead-letter queue sequentially, one admin at a time) or None.
    - `dedupes_on_enqueue`: an enqueue whose id names a job of the same queue
      that is not yet settled (queued, scheduled or held) changes nothing.
    - `transactional_enqueue`: enqueue can join the caller's transaction; the
      broker implements `upnext.broker.optional.TransactionalEnqueue`.
    - `delay_quantum`: delays are rounded up to a multiple of this (seconds).
    - `priority_levels`: priorities the backend can order by, 1 (none) to
      ``MAX_PRIORITY + 1``; above 1, for now only a promise that every
      delivery carries the `Envelope.priority` its job was enqueued with.
    - `delivery_limit`: seconds after which the server takes back an unsettled
      delivery whatever the worker does (None: no limit). A worker warns about
      a task whose timeout reaches it; with `delivery_limit_strict` it refuses.
    - `checked_settles`: a late settle (lease expired, job taken over or
      already settled) reports LeaseLost and changes nothing. False: it may
      still act on its own job (a late Ack may remove a job another receiver
      now holds) and report None; it never touches another job.
    - `atomic_settles`: each settle item is one atomic step. False: an item
      writes (new body, record, result), then removes the delivery; when the
      removal fails the write stays, so a job may exist twice.
    - `exact_stats`: `QueueStats` counts are exact. False: estimates, equal to
      the exact counts once the queue has been still for a few seconds.
    """

    timed_leases: bool = True
    counts_deliveries: bool = True
    cancel_queued: bool = True
    dlq_access: Literal["indexed", "scan"] | None = "indexed"
    dedupes_on_enqueue: bool = False
    transactional_enqueue: bool = False
    delay_quantum: float = 0.0
    priority_levels: int = 1
    delivery_limit: float | None = None
    delivery_limit_strict: bool = False
    checked_settles: bool = True
    atomic_settles: bool = True
    exact_stats: bool = True
