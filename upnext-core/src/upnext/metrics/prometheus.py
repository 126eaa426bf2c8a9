"""Job metrics in the Prometheus text format (needs ``prometheus-client``: ``upnext[metrics]``).

`SnapshotCollector` turns `MetricsSnapshot`s (a worker's own, or those its
peers wrote to the state store) into metric families, each series labelled
with `queue`, `task` and `worker_id`; `render` gives the exposition text.
`MetricsExporter` serves one worker's counts over HTTP on a daemon thread
(prometheus-client's `start_http_server`). Only this module imports
prometheus-client, and only `Worker(metrics_port=...)` and the server import it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from upnext.broker.protocol import QueueStats
    from upnext.metrics._counters import HistogramSnapshot, MetricsSnapshot, SeriesSnapshot

__all__ = ["CONTENT_TYPE", "MetricsExporter", "SnapshotCollector", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of `render`'s output."""

LABELS = ("queue", "task", "worker_id")

COUNTERS: tuple[tuple[str, str], ...] = (
    ("started", "Job attempts whose body was called."),
    ("succeeded", "Jobs settled as complete."),
    ("failed", "Attempts that ran and did not succeed (retried or dead-lettered after running)."),
    ("retried", "Attempts that ran and were settled for another try."),
    ("dead_lettered", "Jobs settled into the dead-letter queue (ran or not)."),
    ("cancelled", "Jobs settled as cancelled (a user cancel or a Skip)."),
)


def _buckets(bounds: Sequence[float], histogram: HistogramSnapshot) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs ending with +Inf, as Prometheus expects."""
    pairs: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*bounds, float("inf")], histogram.counts, strict=True):
        running += count
        pairs.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return pairs


class SnapshotCollector:
    """A prometheus-client collector over worker snapshots, queue depths and the live-worker count.

    `snapshots` is called on each collect. `depths` (queue name to its
    `QueueStats`) become ``upnext_queue_depth{queue,state}`` (a count the
    broker cannot tell is left out); `workers_alive`, when given,
    ``upnext_workers_alive``.
    """

    def __init__(
        self,
        snapshots: Callable[[], Iterable[MetricsSnapshot]],
        *,
        depths: Mapping[str, QueueStats] | None = None,
        workers_alive: int | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.depths = depths or {}
        self.workers_alive = workers_alive

    def collect(self) -> Iterator[Metric]:
        """The metric families, one per counter and histogram, then depth and liveness."""
        snapshots = list(self.snapshots())
        yield from self._jobs(snapshots)
        yield from self._gauges()

    def _jobs(self, snapshots: list[MetricsSnapshot]) -> Iterator[Metric]:
        rows: list[tuple[MetricsSnapshot, SeriesSnapshot]] = [
            (snapshot, series) for snapshot in snapshots for series in snapshot.series
        ]
        for name, text in COUNTERS:
            counter = CounterMetricFamily(f"upnext_jobs_{name}", text, labels=LABELS)
            for snapshot, series in rows:
                labels = [series.queue, series.task, snapshot.worker_id]
                counter.add_metric(labels, getattr(series, name))
            yield counter
        run = HistogramMetricFamily(
            "upnext_job_run_seconds", "How long each body's call took.", labels=LABELS
        )
        wait = HistogramMetricFamily(
            "upnext_job_wait_seconds",
            "From enqueue (or the previous attempt's end) to the start of an attempt.",
            labels=LABELS,
        )
        for snapshot, series in rows:
            labels = [series.queue, series.task, snapshot.worker_id]
            run.add_metric(labels, _buckets(snapshot.run_buckets, series.run), series.run.sum)
            wait.add_metric(labels, _buckets(snapshot.wait_buckets, series.wait), series.wait.sum)
        yield run
        yield wait

    def _gauges(self) -> Iterator[Metric]:
        if self.depths:
            depth = GaugeMetricFamily(
                "upnext_queue_depth",
                "Jobs in a queue by state (ready, scheduled, in_flight, dead), from the broker.",
                labels=("queue", "state"),
            )
            for queue, stats in self.depths.items():
                for state in ("ready", "scheduled", "in_flight", "dead"):
                    value = getattr(stats, state)
                    if value is not None:
                        depth.add_metric([queue, state], value)
            yield depth
        if self.workers_alive is not None:
            yield GaugeMetricFamily(
                "upnext_workers_alive",
                "Workers whose registry entry is live.",
                value=self.workers_alive,
            )


def render(collector: SnapshotCollector) -> bytes:
    """The Prometheus text exposition of what `collector` collects now."""
    return generate_latest(collector)


class MetricsExporter:
    """Serves ``/metrics`` for one worker on `host`:`port` from a daemon thread.

    `snapshot` is called on the HTTP thread at each scrape; the counts it
    reads are plain integers the event loop updates, so a scrape may see one
    job counted in `started` and not yet in `succeeded`, never a broken value.
    `port=0` takes a free port (see `port` once started).
    """

    def __init__(self, snapshot: Callable[[], MetricsSnapshot], *, host: str, port: int) -> None:
        self.collector = SnapshotCollector(lambda: [snapshot()])
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the free one taken for 0)."""
        return self._server.server_port if self._server is not None else self.requested_port

    def start(self) -> None:
        """Listen and serve (OSError if the port is taken)."""
        self._server, self._thread = start_http_server(
            self.requested_port, addr=self.host, registry=self.collector
        )

    def close(self) -> None:
        """Stop serving and free the port (blocks up to half a second: run it off the loop)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
