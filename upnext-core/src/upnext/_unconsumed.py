"""memory:// jobs never leave their process: warn when nobody here consumes them."""

from __future__ import annotations

import asyncio
import logging
import warnings

from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Broker

__all__ = ["NO_WORKER_GRACE", "report_leftovers", "warn_if_no_worker"]

log = logging.getLogger("upnext.worker")

NO_WORKER_GRACE = 1.0  # seconds before an unconsumed memory:// submit warns


def warn_if_no_worker(broker: Broker) -> None:
    """Arm a one-time check: a memory:// job nobody in this process consumes is lost.

    Checked a second later, so submitting just before starting the worker
    (a common pattern in tests and scripts) does not warn.
    """
    if (
        isinstance(broker, MemoryBroker)
        and not broker.workers_attached
        and not broker.warned_no_worker
        and not broker.no_worker_check_armed
    ):
        broker.no_worker_check_armed = True
        asyncio.get_running_loop().call_later(NO_WORKER_GRACE, _warn_unconsumed, broker)


def report_leftovers(broker: Broker) -> None:
    """A memory:// worker stopped: warn about the jobs still queued, lost with the process."""
    if isinstance(broker, MemoryBroker):
        broker.workers_attached -= 1
        left = broker.pending()
        if left and not broker.workers_attached:
            log.warning(
                "%d job(s) still queued on %s are lost when this process exits", left, broker.url
            )


def _warn_unconsumed(broker: MemoryBroker) -> None:
    broker.no_worker_check_armed = False
    if broker.workers_attached or broker.warned_no_worker or not broker.pending():
        return
    broker.warned_no_worker = True
    warnings.warn(
        f"jobs were submitted to {broker.url} but no worker runs in this process:"
        " memory:// jobs never leave the process",
        RuntimeWarning,
        stacklevel=1,
    )
