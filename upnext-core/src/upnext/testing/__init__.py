"""The upnext conformance suite: prove a backend keeps the broker contract.

Usage, in the backend's tests::

    # conftest.py
    pytest_plugins = ["upnext.testing.plugin"]

    # test_conformance.py
    import pytest_asyncio
    from upnext.testing import (
        BrokerConformance,
        DeadLetterAdminConformance,
        QueueAdminConformance,
        ResultStoreConformance,
    )

    class TestMyBroker(
        BrokerConformance,
        ResultStoreConformance,
        DeadLetterAdminConformance,
        QueueAdminConformance,
    ):
        @pytest_asyncio.fixture
        async def broker(self) -> AsyncIterator[Broker]:
            broker = MyBroker(URL)
            await broker.connect()
            yield broker
            await broker.aclose()

`JobBrowserConformance` is for a backend that implements the optional
`upnext.broker.optional.JobBrowser` (listing waiting jobs); leave it out otherwise.

Every class needs only the `broker` fixture; `results` (the `ResultStore`
under test) and `state` (the `StateStore` under test, for
`StateStoreConformance`) default to the broker itself and may be overridden. The plugin
supplies `upnext_queue` / `upnext_queues` (unique queue names) and `timing`
(``--upnext-timing-scale`` or env ``UPNEXT_TIMING_SCALE`` stretches every
delay and tolerance on slow machines). Tests run under pytest-asyncio in auto
or strict mode with function-scoped event loops.

Capabilities: a test that needs more than the mandatory contract skips
itself, with the reason shown, when ``broker.capabilities`` does not declare
it (``timed_leases``, ``counts_deliveries``, ``cancel_queued``,
``dlq_access``, ``dedupes_on_enqueue``, ``priority_levels`` > 1);
``delay_quantum`` widens the lateness allowed for delays.
The suite never looks at a backend's name. It drives the broker through the
protocol alone (no Worker): envelopes and dead-letter records are built by
the tests, and records reach the DLQ through ``settle(DeadLetter(...))``.
Every test works on its own queues, except ``test_dlq_purge_all``, which
removes every dead-letter entry the broker can see.

Overriding by name: each test is a plain method, so a backend replaces one by
defining a method of the same name in its class, or skips or xfails it with
a reason (marks are not inherited by an override, so under strict mode give
a replacement its own ``@pytest.mark.asyncio``)::

    class TestMyBroker(BrokerConformance, DeadLetterAdminConformance, QueueAdminConformance):
        @pytest.mark.skip(reason="purge-all would wipe a shared server")
        async def test_dlq_purge_all(self) -> None: ...

        @pytest.mark.asyncio
        @pytest.mark.xfail(strict=True, reason="delayed jobs live outside the queue")
        async def test_purge_drops_ready_and_scheduled_jobs(self, broker, upnext_queue, timing):
            await super().test_purge_drops_ready_and_scheduled_jobs(broker, upnext_queue, timing)

Every test takes only fixtures (`broker`, `results`, `upnext_queue`,
`upnext_queues`, `timing`), so an override can call ``super()`` with them.

A failing assertion names the broken guarantee: ``guarantee violated: ...``.
"""

import pkgutil

import pytest

# Registered before the submodules are imported so pytest rewrites their asserts
# (the package itself is already importing, so it is named module by module).
pytest.register_assert_rewrite(*(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)))

from upnext.testing._environment import needs_modules, needs_server, unavailable  # noqa: E402
from upnext.testing._support import Timing  # noqa: E402
from upnext.testing.admin import QueueAdminConformance  # noqa: E402
from upnext.testing.broker import BrokerConformance  # noqa: E402
from upnext.testing.browse import JobBrowserConformance  # noqa: E402
from upnext.testing.dlq import DeadLetterAdminConformance  # noqa: E402
from upnext.testing.results import ResultStoreConformance  # noqa: E402
from upnext.testing.semantics import (  # noqa: E402
    ApiSemantics,
    CronSemantics,
    DeadLetterSemantics,
    ErrorSemantics,
    ExpirySemantics,
    FlowLimitSemantics,
    HookSemantics,
    IsolationSemantics,
    JobIdSemantics,
    LeaseSemantics,
    LifecycleSemantics,
    LoggingSemantics,
    PauseSemantics,
    PluginSemantics,
    PrioritySemantics,
    ResultSemantics,
    RetryFilterSemantics,
    RetrySemantics,
    SemanticsBase,
    TimeoutSemantics,
    TracingSemantics,
    UniqueJobSemantics,
    WorkerFactory,
    WorkerSemantics,
    WorkflowSemantics,
)
from upnext.testing.state import StateStoreConformance  # noqa: E402

__all__ = [
    "ApiSemantics",
    "BrokerConformance",
    "CronSemantics",
    "DeadLetterAdminConformance",
    "DeadLetterSemantics",
    "ErrorSemantics",
    "ExpirySemantics",
    "FlowLimitSemantics",
    "HookSemantics",
    "IsolationSemantics",
    "JobBrowserConformance",
    "JobIdSemantics",
    "LeaseSemantics",
    "LifecycleSemantics",
    "LoggingSemantics",
    "PauseSemantics",
    "PluginSemantics",
    "PrioritySemantics",
    "QueueAdminConformance",
    "ResultSemantics",
    "ResultStoreConformance",
    "RetryFilterSemantics",
    "RetrySemantics",
    "SemanticsBase",
    "StateStoreConformance",
    "TimeoutSemantics",
    "Timing",
    "TracingSemantics",
    "UniqueJobSemantics",
    "WorkerFactory",
    "WorkerSemantics",
    "WorkflowSemantics",
    "needs_modules",
    "needs_server",
    "unavailable",
]
