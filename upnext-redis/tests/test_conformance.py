"""The shared conformance suite against Redis: every test must pass."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from upnext.testing import (
    BrokerConformance,
    DeadLetterAdminConformance,
    JobBrowserConformance,
    QueueAdminConformance,
    ResultStoreConformance,
    StateStoreConformance,
)
from upnext_redis import RedisBroker


class TestRedisBroker(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    JobBrowserConformance,
    StateStoreConformance,
):
    """The broker, result store, dead-letter, queue admin, browser and state contracts."""

    @pytest_asyncio.fixture
    async def broker(self, redis_broker: RedisBroker) -> AsyncIterator[RedisBroker]:
        """The connected broker of conftest (own key prefix, cleaned afterwards)."""
        yield redis_broker
