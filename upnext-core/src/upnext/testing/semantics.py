"""`WorkerSemantics`: every semantic conformance class in one, for a backend to subclass.

The classes drive a real `upnext.Worker` through every behaviour the docs
state (docs/semantics.md, retries and their filters, expiry, cron, pausing a
queue, unique jobs, timeouts, results, hooks, errors and the dead-letter queue). A backend
author provides the broker URL (and a result-store URL if results live
elsewhere)::

    # conftest.py
    pytest_plugins = ["upnext.testing.plugin"]

    # test_semantics.py
    import pytest
    from upnext.testing.semantics import WorkerSemantics

    class TestMyBrokerSemantics(WorkerSemantics):
        @pytest.fixture
        def broker_url(self) -> str:
            return "mybroker://localhost/0"

When results live in a separate store, also override ``results_url`` (it
defaults to None: the broker keeps results itself).

Each test uses the plugin's unique `upnext_queue` as its worker's name (and so
its queue), and its `timing` fixture to scale delays on slow machines. Tests
needing a capability (`timed_leases`, `counts_deliveries`, `cancel_queued`,
`dlq_access`, `priority_levels` > 1) skip with the reason shown when the
connected broker lacks it; job ids, cron, pausing and unique jobs skip without shared state
(a `StateStore` in the broker or its result store); `TracingSemantics` skips
without ``upnext[otel]`` installed.
Subclass a single theme class instead to run only that part, and override a
test by defining a method of the same name.
"""

from __future__ import annotations

from upnext.testing.semantics_api import ApiSemantics
from upnext.testing.semantics_base import SemanticsBase, WorkerFactory
from upnext.testing.semantics_cron import CronSemantics
from upnext.testing.semantics_dlq import DeadLetterSemantics
from upnext.testing.semantics_errors import ErrorSemantics
from upnext.testing.semantics_expiry import ExpirySemantics
from upnext.testing.semantics_flow import FlowLimitSemantics
from upnext.testing.semantics_hooks import HookSemantics
from upnext.testing.semantics_ids import JobIdSemantics
from upnext.testing.semantics_isolation import IsolationSemantics
from upnext.testing.semantics_jobs import JobListingSemantics
from upnext.testing.semantics_leases import LeaseSemantics
from upnext.testing.semantics_lifecycle import LifecycleSemantics
from upnext.testing.semantics_logging import LoggingSemantics
from upnext.testing.semantics_middleware import MiddlewareSemantics
from upnext.testing.semantics_pause import PauseSemantics
from upnext.testing.semantics_plugins import PluginSemantics
from upnext.testing.semantics_priority import PrioritySemantics
from upnext.testing.semantics_results import ResultSemantics
from upnext.testing.semantics_retries import RetrySemantics
from upnext.testing.semantics_retry_filters import RetryFilterSemantics
from upnext.testing.semantics_timeouts import TimeoutSemantics
from upnext.testing.semantics_tracing import TracingSemantics
from upnext.testing.semantics_unique import UniqueJobSemantics
from upnext.testing.semantics_workflows import WorkflowSemantics

__all__ = [
    "ApiSemantics",
    "CronSemantics",
    "DeadLetterSemantics",
    "ErrorSemantics",
    "ExpirySemantics",
    "FlowLimitSemantics",
    "HookSemantics",
    "IsolationSemantics",
    "JobIdSemantics",
    "JobListingSemantics",
    "LeaseSemantics",
    "LifecycleSemantics",
    "LoggingSemantics",
    "MiddlewareSemantics",
    "PauseSemantics",
    "PluginSemantics",
    "PrioritySemantics",
    "ResultSemantics",
    "RetryFilterSemantics",
    "RetrySemantics",
    "SemanticsBase",
    "TimeoutSemantics",
    "TracingSemantics",
    "UniqueJobSemantics",
    "WorkerFactory",
    "WorkerSemantics",
    "WorkflowSemantics",
]


class WorkerSemantics(
    RetrySemantics,
    RetryFilterSemantics,
    ExpirySemantics,
    CronSemantics,
    PauseSemantics,
    UniqueJobSemantics,
    FlowLimitSemantics,
    ErrorSemantics,
    TimeoutSemantics,
    LeaseSemantics,
    DeadLetterSemantics,
    HookSemantics,
    PluginSemantics,
    IsolationSemantics,
    WorkflowSemantics,
    ResultSemantics,
    LifecycleSemantics,
    LoggingSemantics,
    ApiSemantics,
    JobIdSemantics,
    MiddlewareSemantics,
    PrioritySemantics,
    TracingSemantics,
    JobListingSemantics,
):
    """Every behaviour the docs state, through a real worker on your broker."""
