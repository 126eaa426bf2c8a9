"""The worker's group-commit settle: one broker call per batch, and a bad item isolated.

A batch is settled in one call. While the broker cannot be reached
(`BrokerUnavailable`) the call is retried with backoff, as a whole. When the
broker refuses it for anything else, the batch is settled again in halves,
down to the single items that are refused (every backend applies a batch
entirely or not at all, so nothing is settled twice). A refused item is
tried alone once more, then dead-lettered with the refusal as its reason.

Whether the item or the broker is at fault is judged by evidence: if anything
else in the round was settled (a sibling, or a dead-letter), the broker works
and the item is bad; a bad item whose dead-letter is refused too is released,
the reason logged. If nothing at all was accepted (a full Redis, a read-only
PostgreSQL), no job is blamed: the batch waits and is retried whole, as for an
unreachable broker. So one bad item never holds up, repeats or loses the rest
of its batch, and a refusing broker never dead-letters good jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from upnext._backoff import Backoff
from upnext._result import ErrorInfo
from upnext._serializer import JobBody, UndecodableBody, decode_body
from upnext._settlement import dead_letter
from upnext.broker.protocol import DeadLetter, Release, Retry, SettleItem, SettleOutcome
from upnext.errors import BrokerUnavailable, LeaseLost

if TYPE_CHECKING:
    from upnext._client import Client

__all__ = ["GroupSettle"]

log = logging.getLogger("upnext.worker")

RETRY_ALONE_AFTER = 0.1  # seconds before refused items are tried once more, each alone


@dataclass(frozen=True, slots=True)
class _Refused:
    """An item the broker refused, alone, and why."""

    error: Exception


class GroupSettle:
    """Settles batches for a consumer; `stopping()` says when to give up retrying."""

    def __init__(self, client: Client, stopping: Callable[[], bool]) -> None:
        self.client = client
        self.stopping = stopping

    async def __call__(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """One outcome per item; LeaseLost (with the reason) for one settled some other way."""
        backoff: Backoff | None = None  # made on the first refusal only (every settle comes here)
        while True:
            outcomes = await self._split(items)
            refused = [i for i, o in enumerate(outcomes) if isinstance(o, _Refused)]
            if not refused:
                return cast("list[SettleOutcome]", outcomes)
            await asyncio.sleep(RETRY_ALONE_AFTER)  # a refusal that passes was not the item's
            healthy = len(refused) < len(items)
            for i in refused:
                outcomes[i] = await self._alone(items[i])
            healthy |= any(not isinstance(outcomes[i], _Refused) for i in refused)
            if healthy:
                return [await self._release(items[i], o) for i, o in enumerate(outcomes)]
            error = outcomes[refused[0]]
            assert isinstance(error, _Refused)
            backoff = backoff or Backoff(first=0.05, cap=2.0)
            pause = next(backoff)
            if self.stopping() and pause > 1.0:
                raise error.error
            log.warning("the broker refuses every settle (%s); retrying", error.error)
            await asyncio.sleep(pause)

    async def _split(self, items: Sequence[SettleItem]) -> list[SettleOutcome | _Refused]:
        """Settle the batch; if refused, its halves, down to the single items refused."""
        try:
            return list(await self._retrying(items))
        except BrokerUnavailable:
            raise  # only when stopping: the worker gives up, the leases run out
        except Exception as exc:
            if len(items) == 1:
                return [_Refused(exc)]
            log.warning("settle of %d items refused (%s); settling it in halves", len(items), exc)
            half = len(items) // 2
            return [*await self._split(items[:half]), *await self._split(items[half:])]

    async def _retrying(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Settle the batch, retrying with backoff while the broker is unreachable."""
        backoff: Backoff | None = None  # made on the first failure only
        while True:
            try:
                return await self.client.broker.settle(items)
            except BrokerUnavailable as exc:
                backoff = backoff or Backoff(first=0.05, cap=2.0)
                pause = next(backoff)
                if self.stopping() and pause > 1.0:
                    raise
                log.warning("settle of %d items failed: %s; retrying", len(items), exc)
                await asyncio.sleep(pause)

    async def _alone(self, item: SettleItem) -> SettleOutcome | _Refused:
        """The item alone once more, else its dead-letter; _Refused if both are refused."""
        try:
            return (await self._retrying([item]))[0]
        except BrokerUnavailable:
            raise
        except Exception as exc:
            refusal = exc
        if isinstance(item, Release | DeadLetter):
            return _Refused(refusal)
        job_id = item.delivery.envelope.id
        try:
            outcome = (await self._retrying([await self._dead_letter(item, refusal)]))[0]
        except BrokerUnavailable:
            raise
        except Exception as exc:
            log.error("job %s: its dead-letter was refused too: %s", job_id, exc)
            return _Refused(refusal)
        reason = f"the broker refused its settle ({type(refusal).__name__}: {refusal})"
        log.error("job %s dead-lettered: %s", job_id, reason)
        return outcome or LeaseLost(f"job {job_id} dead-lettered instead: {reason}")

    async def _release(self, item: SettleItem, outcome: SettleOutcome | _Refused) -> SettleOutcome:
        """`outcome`, or for an item still refused (dead-letter too): released, reason logged."""
        if not isinstance(outcome, _Refused):
            return outcome
        job_id = item.delivery.envelope.id
        reason = f"the broker refused its settle ({outcome.error})"
        log.error("job %s released: %s", job_id, reason)
        if not isinstance(item, Release):
            try:
                await self._retrying([Release(item.delivery)])
            except Exception as exc:
                log.error("job %s: release failed (%s); back after its lease", job_id, exc)
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
