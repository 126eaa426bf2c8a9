"""Reading the metrics snapshots workers keep in the state store."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError

from upnext._statekeys import METRICS_PREFIX
from upnext.metrics._counters import MetricsSnapshot

if TYPE_CHECKING:
    from upnext.broker.state import StateStore

__all__ = ["read_snapshots"]

log = logging.getLogger("upnext.metrics")


async def read_snapshots(state: StateStore) -> list[MetricsSnapshot]:
    """The last snapshot of every live worker with metrics on, ordered by worker id."""
    found: list[MetricsSnapshot] = []
    cursor: str | None = None
    while True:
        page = await state.state_scan(METRICS_PREFIX, limit=100, cursor=cursor)
        for key, entry in page.entries:
            try:
                found.append(MetricsSnapshot.model_validate_json(entry.value))
            except ValidationError:  # written by another upnext version: not ours to read
                log.debug("skipping metrics entry %s: not a MetricsSnapshot", key)
        if (cursor := page.next_cursor) is None:
            return sorted(found, key=lambda s: s.worker_id)
