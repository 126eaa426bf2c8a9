"""`Worker.enable_metrics`'s work: the counting middleware, and an exporter for a port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from upnext.errors import ConfigurationError
from upnext.metrics._counters import JobMetrics

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = ["attach_metrics"]


def attach_metrics(worker: Worker, port: int | None, host: str) -> None:
    """Give `worker` a `JobMetrics` (once) and, with `port`, an exporter on `host`:`port`."""
    if port is not None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"metrics port must be 0..65535, got {port}")
        try:
            from upnext.metrics.prometheus import MetricsExporter
        except ImportError:
            raise ConfigurationError(
                "a metrics port needs prometheus-client: pip install 'upnext[metrics]'"
            ) from None
        worker.metrics_exporter = MetricsExporter(worker.metrics_now, host=host, port=port)
    if worker.metrics is None:
        worker.metrics = JobMetrics()
        # First after the built-ins: the last after_run and after_settle to see a job.
        worker.middleware = (worker.metrics, *worker.middleware)
