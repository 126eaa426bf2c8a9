"""The whole upnext conformance suite against a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from upnext.testing import (
    BrokerConformance,
    DeadLetterAdminConformance,
    JobBrowserConformance,
    QueueAdminConformance,
    ResultStoreConformance,
    StateStoreConformance,
)
from upnext.testing.semantics import WorkerSemantics
from upnext_sqlite import SQLiteBroker


class TestSQLiteBroker(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    JobBrowserConformance,
    StateStoreConformance,
):
    """The broker, result store, state store, dead-letter, queue admin and browser contracts."""

    @pytest_asyncio.fixture
    async def broker(self, sqlite_broker: SQLiteBroker) -> AsyncIterator[SQLiteBroker]:
        """A connected broker on a fresh file."""
        yield sqlite_broker


class TestSQLiteSemantics(WorkerSemantics):
    """Every semantic class: a real Worker on the file, found by its sqlite:// URL."""

    @pytest.fixture
    def broker_url(self, db_url: str) -> str:
        """This test's database file, as a URL (resolved through the entry point)."""
        return db_url
