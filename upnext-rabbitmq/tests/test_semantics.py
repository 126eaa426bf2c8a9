"""docs/semantics.md and the seed page through a real Worker on RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from upnext.testing.semantics import WorkerSemantics
from upnext_rabbitmq import RabbitBroker


class TestRabbitSemantics(WorkerSemantics):
    """Every semantic class; capability skips only."""

    @pytest.fixture
    def broker_url(self, amqp_url: str, broker: RabbitBroker) -> str:
        """The test server (reached first through `broker`: skip or fail if it is down)."""
        return amqp_url

    @pytest_asyncio.fixture(autouse=True)
    async def _cleanup(
        self, upnext_queue: str, queue_deleter: Callable[[set[str]], Awaitable[None]]
    ) -> AsyncIterator[None]:
        yield
        await queue_deleter({upnext_queue})
