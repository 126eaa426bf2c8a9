"""``GET /metrics``: every live worker's job counts, queue depths and live workers, for Prometheus.

The server sees no job start, so it counts none itself: each worker with
metrics on writes its `MetricsSnapshot` to the state store on its tick, and a
scrape reads the live ones back, one series per worker (``worker_id``
label; sum over it in PromQL). Queue depths come from the broker's stats.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from upnext.broker.protocol import QueueStats
from upnext.metrics import MetricsSnapshot, read_snapshots
from upnext.metrics.prometheus import CONTENT_TYPE, SnapshotCollector, render
from upnext.server._backend import Backend
from upnext.workers import read_registry

__all__ = ["metrics_router"]

metrics_router = APIRouter()


async def scrape(backend: Backend) -> bytes:
    """The exposition text: snapshots and liveness from the state store (if any), depths."""
    client = await backend.worker.client()
    snapshots: list[MetricsSnapshot] = []
    alive: int | None = None
    if client.state is not None:
        snapshots = await read_snapshots(client.state)
        alive = len(await read_registry(client.state))
    depths = {
        q.name: QueueStats(ready=q.ready, scheduled=q.scheduled, in_flight=q.in_flight, dead=q.dead)
        for q in await backend.queue_stats()
    }
    return render(SnapshotCollector(lambda: snapshots, depths=depths, workers_alive=alive))


@metrics_router.get(
    "/metrics",
    tags=["metrics"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format: job counters and histograms per queue, task and worker."""
    backend: Backend = request.app.state.backend
    return Response(await scrape(backend), media_type=CONTENT_TYPE)
