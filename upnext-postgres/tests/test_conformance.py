"""The shared conformance suite against PostgreSQL: every test must pass."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from upnext.testing import (
    BrokerConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    ResultStoreConformance,
)
from upnext_postgres import PostgresBroker


class TestPostgresBroker(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
):
    """The broker, result store, dead-letter and queue admin contracts on a real server."""

    @pytest_asyncio.fixture
    async def broker(self, pg_broker: PostgresBroker) -> AsyncIterator[PostgresBroker]:
        """The connected broker of conftest (one per test, on the session's schema)."""
        yield pg_broker
