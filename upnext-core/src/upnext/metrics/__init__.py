"""Job metrics: counted in each worker, read by its exporter and by the server.

`JobMetrics` is the middleware `Worker(metrics=True)` adds: counts per
(queue, task) of jobs started, succeeded, failed, retried, dead-lettered and
cancelled, and histograms of run duration and wait time. With a state store,
each worker writes its `MetricsSnapshot` on its tick (``upnext:metrics:<id>``)
and `read_snapshots` reads every live one back. The Prometheus side lives in
`upnext.metrics.prometheus` (needs ``upnext[metrics]``). See docs/operations.md.
"""

from upnext.metrics._counters import (
    HistogramSnapshot,
    JobMetrics,
    MetricsSnapshot,
    SeriesSnapshot,
)
from upnext.metrics._store import read_snapshots

__all__ = [
    "HistogramSnapshot",
    "JobMetrics",
    "MetricsSnapshot",
    "SeriesSnapshot",
    "read_snapshots",
]
