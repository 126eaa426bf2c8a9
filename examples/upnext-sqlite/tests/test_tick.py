"""The worker tick (registry, cancel markers, slot refresh) on a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from upnext.testing.tick import WorkerTickSemantics
from upnext_sqlite import SQLiteBroker


class TestSQLiteBrokerTick(WorkerTickSemantics):
    """`WorkerTickSemantics` over the broker's own `StateStore`."""

    @pytest_asyncio.fixture
    async def broker(self, sqlite_broker: SQLiteBroker) -> AsyncIterator[SQLiteBroker]:
        """The backend's connected test broker."""
        yield sqlite_broker
