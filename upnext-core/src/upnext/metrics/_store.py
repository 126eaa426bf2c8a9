"""Reading the metrics snapshots workers keep in the state store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from upnext._statekeys import METRICS_PREFIX, read_prefix
from upnext.metrics._counters import MetricsSnapshot

if TYPE_CHECKING:
    from upnext.broker.state import StateStore

__all__ = ["read_snapshots"]


async def read_snapshots(state: StateStore) -> list[MetricsSnapshot]:
    """The last snapshot of every live worker with metrics on, ordered by worker id."""
    return await read_prefix(state, METRICS_PREFIX, MetricsSnapshot)
