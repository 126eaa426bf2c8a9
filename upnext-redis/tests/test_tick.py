"""The worker tick (registry, cancel markers, slot refresh) on Redis, per-test key prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from upnext.testing.tick import WorkerTickSemantics
from upnext_redis import RedisBroker


class TestRedisBrokerTick(WorkerTickSemantics):
    """`WorkerTickSemantics` over the broker's own `StateStore`."""

    @pytest_asyncio.fixture
    async def broker(self, redis_broker: RedisBroker) -> AsyncIterator[RedisBroker]:
        """The backend's connected test broker."""
        yield redis_broker
