"""docs/semantics.md and the seed page through a real Worker on RabbitMQ."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from upnext.testing.semantics import (
    CronSemantics,
    FlowLimitSemantics,
    JobIdSemantics,
    JobListingSemantics,
    PauseSemantics,
    UniqueJobSemantics,
    WorkerSemantics,
)
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


class _WithRedisState:
    """RabbitMQ keeps no state itself: these run with a Redis companion store (`results=`)."""

    state_prefix = "upnext-test-rabbit"

    @pytest.fixture
    def broker_url(self, amqp_url: str, broker: RabbitBroker) -> str:
        """The test server (reached first through `broker`: skip or fail if it is down)."""
        return amqp_url

    @pytest.fixture
    def results_url(self) -> str:
        """A Redis store under the class's own key prefix."""
        url = os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        return f"{url}{'&' if '?' in url else '?'}prefix={self.state_prefix}"

    @pytest_asyncio.fixture(autouse=True)
    async def _cleanup(
        self, upnext_queue: str, queue_deleter: Callable[[set[str]], Awaitable[None]]
    ) -> AsyncIterator[None]:
        yield
        await queue_deleter({upnext_queue})


class TestRabbitJobListingWithRedisState(_WithRedisState, JobListingSemantics):
    """The jobs listing with the companion store that keeps history and registry."""

    state_prefix = "upnext-test-rabbit-jobs"


class TestRabbitCronWithRedisState(_WithRedisState, CronSemantics):
    """Cron with the companion store that keeps its cursor."""

    state_prefix = "upnext-test-rabbit-cron"


class TestRabbitUniqueJobsWithRedisState(_WithRedisState, UniqueJobSemantics, JobIdSemantics):
    """Job ids and unique jobs with the companion store that keeps their claims."""

    state_prefix = "upnext-test-rabbit-unique"


class TestRabbitFlowLimitsWithRedisState(_WithRedisState, FlowLimitSemantics):
    """Rate and concurrency limits with the companion store that keeps their slots."""

    state_prefix = "upnext-test-rabbit-flow"


class TestRabbitPauseWithRedisState(_WithRedisState, PauseSemantics):
    """Pausing a queue with the companion store that keeps the pause."""

    state_prefix = "upnext-test-rabbit-pause"

    @pytest_asyncio.fixture(autouse=True)
    async def _cleanup(
        self, upnext_queue: str, queue_deleter: Callable[[set[str]], Awaitable[None]]
    ) -> AsyncIterator[None]:
        yield
        await queue_deleter({upnext_queue, f"{upnext_queue}-other"})  # a test's second queue
