"""Turn a settle batch into the settle statement's parallel arrays, and back.

The statement reports which (kind, job id) pairs took effect; every other
item lost its lease and gets `LeaseLost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from upnext.broker.protocol import (
    Ack,
    DeadLetter,
    Release,
    ResultWrite,
    Retry,
    SettleItem,
    SettleOutcome,
)
from upnext.errors import LeaseLost

from upnext_postgres.schema import Names

__all__ = ["SettleBatch"]

_KIND = {Ack: "a", Retry: "r", DeadLetter: "d", Release: "l"}


def _token(receipt: object) -> int:
    # A receipt from another broker can never match a row's token.
    return receipt if isinstance(receipt, int) else -1


class SettleBatch:
    """The columns of one settle call, grouped by item kind."""

    def __init__(self, items: Sequence[SettleItem]) -> None:
        self.items = items
        self.ack: tuple[list[str], list[int]] = ([], [])
        self.retry: tuple[list[Any], ...] = ([], [], [], [])
        self.dead: tuple[list[Any], ...] = tuple([] for _ in range(8))
        self.release: tuple[list[str], list[int]] = ([], [])
        self.results: dict[str, tuple[str, ResultWrite]] = {}
        for item in items:
            self._add(item)

    def _add(self, item: SettleItem) -> None:
        job_id = item.delivery.envelope.id
        token = _token(item.delivery.receipt)
        if isinstance(item, Ack):
            self.ack[0].append(job_id)
            self.ack[1].append(token)
        elif isinstance(item, Retry):
            for column, value in zip(
                self.retry, (job_id, token, item.body, max(item.delay, 0.0)), strict=True
            ):
                column.append(value)
        elif isinstance(item, DeadLetter):
            r = item.record
            row = (job_id, token, r.id, r.function, r.reason, r.queue, r.failed_at, r.data)
            for column, value in zip(self.dead, row, strict=True):
                column.append(value)
        else:
            self.release[0].append(job_id)
            self.release[1].append(token)
        result = getattr(item, "result", None)
        if isinstance(result, ResultWrite) and result.ttl > 0:
            # One row per result job id: ON CONFLICT may touch a row only once.
            self.results[result.job_id] = (job_id, result)

    @property
    def has_results(self) -> bool:
        """True if the batch writes any result."""
        return bool(self.results)

    def arguments(self, names: Names) -> tuple[Any, ...]:
        """The statement's 23 parameters, in order."""
        owners = [owner for owner, _ in self.results.values()]
        writes = [write for _, write in self.results.values()]
        return (
            *self.ack,
            *self.retry,
            *self.dead,
            *self.release,
            owners,
            [w.job_id for w in writes],
            [w.queue for w in writes],
            [w.data for w in writes],
            [w.ttl for w in writes],
            names.jobs_channel,
            names.results_channel,
        )

    def outcomes(self, done: set[tuple[str, str]]) -> list[SettleOutcome]:
        """None for each item whose (kind, job id) took effect, else `LeaseLost`."""
        return [
            None
            if (_KIND[type(item)], item.delivery.envelope.id) in done
            else LeaseLost(f"lease lost for job {item.delivery.envelope.id}")
            for item in self.items
        ]
