"""Whether queues are idle: what `Worker.join` waits for besides its own jobs."""

from __future__ import annotations

from upnext.broker.protocol import QueueAdmin

__all__ = ["queues_empty"]


async def queues_empty(admin: QueueAdmin | None, queues: list[str]) -> bool:
    """Whether `queues` hold nothing ready, scheduled or in flight (True without an admin)."""
    if admin is None:
        return True
    for queue in queues:
        stats = await admin.stats(queue)
        if any(n for n in (stats.ready, stats.scheduled, stats.in_flight) if n):
            return False
    return True
