"""Fixtures for the SQLite backend's tests: a fresh database file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from upnext_sqlite import SQLiteBroker

pytest_plugins = ["upnext.testing.plugin"]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A ``sqlite:////abs/path`` URL of a new file in this test's temporary directory."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest_asyncio.fixture
async def sqlite_broker(db_url: str) -> AsyncIterator[SQLiteBroker]:
    """A connected broker on this test's file, closed afterwards."""
    broker = SQLiteBroker.from_url(db_url)
    await broker.connect()
    yield broker
    await broker.aclose()
