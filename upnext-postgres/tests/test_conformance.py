"""The shared conformance suite against PostgreSQL: every test must pass."""

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
from upnext_postgres import PostgresBroker


class TestPostgresBroker(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    JobBrowserConformance,
    StateStoreConformance,
):
    """The broker, result store, state store, dead-letter, queue admin and browser contracts."""

    @pytest_asyncio.fixture
    async def broker(self, pg_broker: PostgresBroker) -> AsyncIterator[PostgresBroker]:
        """The connected broker of conftest (one per test, on the session's schema)."""
        yield pg_broker
