"""What a worker checks and says once, outside the job path: at start, drain and stop.

The delivery-limit check (a task whose timeout reaches the broker's limit),
the start banner, and the drain and stop lines, on the ``upnext.worker``
logger (docs/operations.md). Per-job lines are `_joblog`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from upnext._task import DEFAULT_TIMEOUT
from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._consumer import Consumer
    from upnext._task import Task
    from upnext._worker import Worker
    from upnext.broker.capabilities import Capabilities

__all__ = ["check_delivery_limit", "log_banner", "log_draining", "log_stopped"]

log = logging.getLogger("upnext.worker")


def check_delivery_limit(tasks: Iterable[Task[Any, Any]], capabilities: Capabilities) -> None:
    """Warn (or refuse, with `delivery_limit_strict`) about tasks the server would revoke.

    A broker may declare a `delivery_limit`: the seconds after which its
    server takes back an unsettled delivery (RabbitMQ's consumer_timeout).
    A task whose timeout reaches it would be redelivered while it still
    runs. Both at their defaults (30 min each, RabbitMQ's own default) is
    no choice the user made, and no warning: every default worker would give it.
    """
    limit = capabilities.delivery_limit
    if limit is None:
        return
    for task in tasks:
        if task.timeout >= limit and not task.timeout == limit == DEFAULT_TIMEOUT:
            message = (
                f"task {task.name} has timeout={task.timeout}s, which reaches the broker's"
                f" delivery limit of {limit}s (the longest a delivery may stay unsettled): the"
                " server would take the job back mid-run (lower the task's timeout or raise"
                " the limit in the broker URL)"
            )
            if capabilities.delivery_limit_strict:
                raise ConfigurationError(message)
            log.warning("%s", message)


def log_banner(worker: Worker, consumer: Consumer) -> None:
    """INFO: who this worker is and what it consumes (passwords hidden)."""
    log.info(
        "worker %s started: id %s, queues %s, broker %s%s, concurrency %d, tasks: %s",
        worker.name,
        consumer.worker_id,
        ", ".join(consumer.queues),
        worker.safe_broker_url,
        f", results {redact_url(worker.results_url)}" if worker.results_url else "",
        worker.concurrency,
        ", ".join(sorted(worker.tasks)) or "none",
    )


def log_draining(worker: Worker, consumer: Consumer) -> None:
    """INFO: the worker stops: how many jobs run on, how many go back unstarted."""
    log.info(
        "worker %s draining: %d running (given up to %g s to finish),"
        " %d received but not started (given back)",
        worker.name,
        sum(1 for run in consumer.runs.values() if run.task is not None),
        worker.shutdown_grace,
        len(consumer.buffer),
    )


def log_stopped(worker: Worker, seconds: float) -> None:
    """INFO: the drain ended after `seconds`."""
    log.info("worker %s stopped (drained in %.2f s)", worker.name, seconds)
