"""Paused queues as one consumer sees them: what it may receive, what it gives back.

The worker tick reads the pause markers (``upnext:paused:<queue>``) of the
queues the consumer consumes, with the cancel markers, and calls `update`
with the paused ones. The consumer then receives only from the others; with
all of them paused it waits for the next change (no receive, no busy loop).

Until the first read, with a state store, nothing may be received: a worker
started while a queue is paused starts none of its jobs, at the cost of its
first receive waiting for its first tick (one round trip, made at once). If
that read fails or times out (a companion store down, say), the worker goes
on as if no queue were paused, and says so (WARNING): a store outage must
not stop a worker whose broker works. Later failed reads keep the last
paused set read.

A change of the paused set sets `changed`: a receive in flight returns
between its slices (`upnext._receiving`), so a resume is seen within a tick.

Deliveries of a queue paused while they were buffered, or returned by a
receive in flight when the pause was read, are released at once (`Release`:
no attempt charged), not kept here: the pause holds on every worker, so the
jobs wait in the broker, where queue stats count them, hold no lease, and
take no prefetch room from this worker's other queues. A job already running
finishes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from upnext._consumer import Consumer

__all__ = ["PauseGate"]

log = logging.getLogger("upnext.worker")


class PauseGate:
    """The paused subset of a consumer's queues, and the buffered runs they hold back."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.queues = list(consumer.queues)
        self.paused: frozenset[str] = frozenset()
        # Nothing is received before the first read, where there is a store to read.
        self.known = consumer.client.state is None
        self.changed = asyncio.Event()  # the paused set changed: a receive in flight returns

    def receivable(self) -> list[str]:
        """The queues a receive may ask for now (none before the first read).

        Asked before each receive: a change seen before it needs no early return.
        """
        self.changed.clear()
        if not self.known:
            return []
        return [queue for queue in self.queues if queue not in self.paused]

    def update(self, paused: frozenset[str] | None) -> None:
        """Apply the paused queues the tick read (None: the read failed): hold back, wake."""
        if paused is None:
            if not self.known:
                log.warning(
                    "the paused queues could not be read at start; receiving from every queue"
                    " until they can be"
                )
                self.known = True
                self.consumer.room.set()
            return
        if self.known and paused == self.paused:
            return
        if paused != self.paused:
            log.info("paused queues: %s", ", ".join(sorted(paused)) or "none")
        self.known = True
        self.paused = paused
        self.hold_back()
        self.changed.set()
        self.consumer.room.set()  # the receive loop looks again at what it may receive

    def hold_back(self) -> None:
        """Take the buffered runs of paused queues out of the buffer; release them (background)."""
        if not self.paused:
            return
        buffer = self.consumer.buffer
        held = [run for run in buffer if run.delivery.envelope.queue in self.paused]
        if held:
            kept = [run for run in buffer if run.delivery.envelope.queue not in self.paused]
            buffer.clear()
            buffer.extend(kept)
            self.consumer.spawn(self.consumer.release_buffered(held))
