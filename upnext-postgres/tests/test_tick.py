"""The worker tick (registry, cancel markers, slot refresh) on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from upnext.testing.tick import WorkerTickSemantics
from upnext_postgres import PostgresBroker


class TestPostgresBrokerTick(WorkerTickSemantics):
    """`WorkerTickSemantics` over the broker's own `StateStore`."""

    @pytest_asyncio.fixture
    async def broker(self, pg_broker: PostgresBroker) -> AsyncIterator[PostgresBroker]:
        """The backend's connected test broker."""
        yield pg_broker
