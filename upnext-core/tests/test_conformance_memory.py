"""The conformance suite against the memory:// reference broker: all of it must pass."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from upnext.broker.memory import MemoryBroker
from upnext.testing import (
    BrokerConformance,
    DeadLetterAdminConformance,
    JobBrowserConformance,
    QueueAdminConformance,
    ResultStoreConformance,
    StateStoreConformance,
)


class TestMemoryBroker(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    JobBrowserConformance,
    StateStoreConformance,
):
    """Every conformance class, on a fresh MemoryBroker per test."""

    @pytest_asyncio.fixture
    async def broker(self) -> AsyncIterator[MemoryBroker]:
        """A fresh broker, built directly (not through the per-process registry)."""
        broker = MemoryBroker(f"memory://t-{uuid.uuid4().hex}")
        await broker.connect()
        yield broker
        await broker.aclose()
