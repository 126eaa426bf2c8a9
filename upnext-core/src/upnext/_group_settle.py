"""The worker's group-commit settle: one broker call per batch, and a bad item isolated.

A batch is settled in one call. While the broker cannot be reached
(`BrokerUnavailable`) the call is retried with backoff, as a whole. When the
broker refuses it for anything else, the refusal is about the data of some
item: the batch is split in halves, each settled on its own, down to the
single item that is refused. That item alone is dead-lettered with the
refusal as its reason (or, if even that is refused, released, with the reason
logged), so one bad item never holds up, repeats or loses the rest of its
batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from upnext._result import ErrorInfo
from upnext._serializer import JobBody, UndecodableBody, decode_body
from upnext._settlement import dead_letter
from upnext.broker.protocol import DeadLetter, Release, Retry, SettleItem, SettleOutcome
from upnext.errors import BrokerUnavailable, LeaseLost

if TYPE_CHECKING:
    from upnext._client import Client

__all__ = ["GroupSettle"]

log = logging.getLogger("upnext.worker")

RETRY_ALONE_AFTER = 0.1  # seconds before a refused item is tried once more on its own


class GroupSettle:
    """Settles batches for a consumer; `stopping()` says when to give up retrying."""

    def __init__(self, client: Client, stopping: Callable[[], bool]) -> None:
        self.client = client
        self.stopping = stopping

    async def __call__(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """One outcome per item; a refused item is settled some other way, and says so."""
        try:
            return await self._retrying(items)
        except BrokerUnavailable:
            raise  # only when stopping: the worker gives up, the leases run out
        except Exception as exc:
            if len(items) == 1:
                return [await self._refused(items[0], exc)]
            log.warning(
                "settle of %d items refused (%s); settling them in halves to isolate the bad one",
                len(items),
                exc,
            )
            half = len(items) // 2
            return [*await self(items[:half]), *await self(items[half:])]

    async def _retrying(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Settle the batch, retrying with backoff while the broker is unreachable."""
        delay = 0.05
        while True:
            try:
                return await self.client.broker.settle(items)
            except BrokerUnavailable as exc:
                if self.stopping() and delay > 1.0:
                    raise
                log.warning("settle of %d items failed: %s; retrying", len(items), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _refused(self, item: SettleItem, exc: Exception) -> SettleOutcome:
        """Settle a refused item some other way: alone once more, else dead-lettered, else released.

        The outcome is LeaseLost unless the item itself took effect, so that
        what its settlement would have announced is not announced.
        """
        await asyncio.sleep(RETRY_ALONE_AFTER)  # a refusal that passes is not the item's fault
        try:
            return (await self._retrying([item]))[0]
        except BrokerUnavailable:
            raise
        except Exception as again:
            exc = again
        job_id = item.delivery.envelope.id
        reason = f"the broker refused its settle: {type(exc).__name__}: {exc}"
        if not isinstance(item, Release | DeadLetter):
            try:
                outcome = (await self._retrying([await self._dead_letter(item, exc)]))[0]
            except BrokerUnavailable:
                raise
            except Exception as dead_exc:
                log.error("job %s: dead-lettering it was refused too: %s", job_id, dead_exc)
            else:
                log.error("job %s dead-lettered: %s", job_id, reason)
                return outcome or LeaseLost(f"job {job_id} dead-lettered instead: {reason}")
        log.error("job %s released: %s", job_id, reason)
        if not isinstance(item, Release):
            try:
                await self._retrying([Release(item.delivery)])
            except Exception as release_exc:
                log.error("job %s: release failed (%s); back after its lease", job_id, release_exc)
        return LeaseLost(f"job {job_id} not settled: {reason}")

    async def _dead_letter(self, item: SettleItem, exc: Exception) -> DeadLetter:
        """A dead-letter item for `item`'s job; its `failed` result written first or within."""
        delivery = item.delivery
        raw = item.body if isinstance(item, Retry) else delivery.envelope.body
        try:
            body: JobBody | None = decode_body(raw, len(raw))
        except UndecodableBody:
            body = None
        error = ErrorInfo(type=type(exc).__name__, message=str(exc))
        attempts = body.attempts if body is not None else 0
        settlement = dead_letter(
            delivery, reason="settle refused", error=error, body=body, attempts=attempts
        )
        assert isinstance(settlement.item, DeadLetter)
        assert settlement.result is not None
        if self.client.same:
            return DeadLetter(delivery, settlement.item.record, settlement.result)
        await self.client.results.submit(settlement.result)  # waiters get an outcome
        return settlement.item
