"""DESIGN §3 and the seed page through a real Worker on RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from upnext.testing import Timing
from upnext.testing.semantics import WorkerFactory, WorkerSemantics


class TestRabbitSemantics(WorkerSemantics):
    """Every semantic class; capability skips only (and two suite problems, reported)."""

    @pytest.fixture
    def broker_url(self, amqp_url: str) -> str:
        """The test server."""
        return amqp_url

    @pytest_asyncio.fixture(autouse=True)
    async def _cleanup(
        self, upnext_queue: str, queue_deleter: Callable[[set[str]], Awaitable[None]]
    ) -> AsyncIterator[None]:
        yield
        await queue_deleter({upnext_queue})

    @pytest.mark.xfail(
        strict=True,
        reason="suite/core: the 'enqueued' plugin event is emitted after enqueue_many "
        "returns; with a confirm round trip (~1.5 ms) the worker starts the job first",
    )
    async def test_plugins_get_every_event_with_statuses(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Plugins see every event in order (RabbitMQ: started can precede enqueued)."""
        await super().test_plugins_get_every_event_with_statuses(make_worker, timing)

    @pytest.mark.xfail(
        strict=True,
        reason="suite: calls dlq.dlq_count() on the broker after `async with worker` "
        "closed it (semantics_retries.py, last line of this test)",
    )
    async def test_reject_dead_letters_at_once_keeping_attempts_unused(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Reject dead-letters at once (the suite then uses a closed broker)."""
        await super().test_reject_dead_letters_at_once_keeping_attempts_unused(make_worker, timing)
