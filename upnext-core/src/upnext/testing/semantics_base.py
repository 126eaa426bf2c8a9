"""Shared fixtures and helpers of the semantic conformance classes.

The semantic classes drive a real `upnext.Worker` against the broker a
subclass names by URL. A backend author provides one fixture, `broker_url`
(and `results_url` when results live in a separate store); every worker a
test builds uses those URLs, the plugin's unique `upnext_queue` as its name
(so also its default queue), and is closed when the test ends. Capabilities
are read from the connected broker; a test skips only for a missing
capability, with the reason shown.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import pytest
import pytest_asyncio

from upnext import DeadLetterEntry, Worker
from upnext.broker.protocol import Broker, Capabilities, DeadLetterAdmin
from upnext.testing._support import Timing, require, violated

__all__ = [
    "EARLY_SLACK",
    "SemanticsBase",
    "Timing",
    "WorkerFactory",
    "bounded",
    "broker_of",
    "capabilities_of",
    "dlq_entry",
    "gaps",
    "need",
    "need_dlq",
    "quantized_upper",
    "violated",
    "wait_until",
]

T = TypeVar("T")

# Clocks of brokers and this process tick differently; "never early" allows this much.
EARLY_SLACK = 0.01


class WorkerFactory(Protocol):
    """Builds a `Worker` on the suite's broker; closed for you when the test ends."""

    def __call__(self, name: str | None = None, **options: Any) -> Worker:
        """A worker named `name` (default: the test's unique queue) with `options`."""
        ...


class SemanticsBase:
    """Fixtures every semantic class uses: URLs in, closed workers out.

    Override `broker_url` (and `results_url` if the broker keeps no results).
    """

    @pytest.fixture
    def broker_url(self) -> str:
        """Placeholder: a backend's class returns its broker URL here."""
        pytest.fail(
            "override the `broker_url` fixture in your semantics class: "
            "@pytest.fixture def broker_url(self) -> str: return 'mybroker://...'"
        )

    @pytest.fixture
    def results_url(self) -> str | None:
        """The result-store URL, or None when the broker keeps results itself."""
        return None

    @pytest_asyncio.fixture
    async def make_worker(
        self, broker_url: str, results_url: str | None, upnext_queue: str
    ) -> AsyncIterator[WorkerFactory]:
        """A factory of workers on the suite's URLs; each is closed after the test."""
        workers: list[Worker] = []

        def make(name: str | None = None, **options: Any) -> Worker:
            # plugins installed in the environment would see (and could disturb) test jobs
            options.setdefault("load_plugins", False)
            worker = Worker(name or upnext_queue, broker_url, results=results_url, **options)
            workers.append(worker)
            return worker

        yield make
        for worker in reversed(workers):
            await worker.aclose()


async def broker_of(worker: Worker) -> Broker:
    """The connected broker behind `worker` (in this event loop)."""
    return (await worker.client()).broker


async def capabilities_of(worker: Worker) -> Capabilities:
    """What the connected broker declares it can do."""
    return (await broker_of(worker)).capabilities


async def need(worker: Worker, capability: str, wanted: Any = True) -> Broker:
    """Skip unless the connected broker declares `capability` == `wanted`; the broker."""
    broker = await broker_of(worker)
    require(broker, capability, wanted)
    return broker


async def need_dlq(worker: Worker) -> DeadLetterAdmin:
    """Skip unless the connected broker offers dead-letter access."""
    broker = await broker_of(worker)
    if broker.capabilities.dlq_access is None:
        pytest.skip(f"needs capability dlq_access; {type(broker).__name__} declares None")
    assert isinstance(broker, DeadLetterAdmin), violated(
        "a broker declaring dlq_access must implement DeadLetterAdmin"
    )
    return broker


def quantized_upper(nominal: float, quantum: float) -> float:
    """`nominal` rounded up to the broker's delay quantum (the earliest it can fire)."""
    if quantum <= 0:
        return nominal
    return math.ceil(nominal / quantum - 1e-9) * quantum


def gaps(stamps: Sequence[float]) -> list[float]:
    """Differences between consecutive timestamps."""
    return [b - a for a, b in itertools.pairwise(stamps)]


async def wait_until(
    predicate: Callable[[], bool], *, within: float, what: str, step: float = 0.01
) -> None:
    """Poll `predicate` until true; fail naming `what` if that takes over `within` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(violated(f"{what} (not within {within:.2f} s)"))
        await asyncio.sleep(step)


async def bounded(awaitable: Awaitable[T], within: float, what: str) -> T:
    """Await with a bound, failing (not hanging) with `what` when it is overrun."""
    scope = asyncio.timeout(within)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if not scope.expired():
            raise  # the awaitable's own TimeoutError (e.g. WaitTimeout)
        pytest.fail(violated(f"{what} (not within {within:.2f} s)"))


async def dlq_entry(worker: Worker, queue: str, job_id: str) -> DeadLetterEntry | None:
    """The dead-letter entry of `job_id` in `queue`, or None (walks every page)."""
    cursor: str | None = None
    while True:
        page = await worker.dlq.list(limit=500, cursor=cursor, queue=queue)
        for entry in page.items:
            if entry.job_id == job_id:
                return entry
        if page.next_cursor is None:
            return None
        cursor = page.next_cursor
