"""Redis Cluster: a private 3-master cluster runs the conformance and semantic classes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from upnext.testing import BrokerConformance
from upnext.testing.semantics_dlq import DeadLetterSemantics
from upnext.testing.semantics_errors import ErrorSemantics
from upnext.testing.semantics_hooks import HookSemantics
from upnext.testing.semantics_leases import LeaseSemantics
from upnext.testing.semantics_retries import RetrySemantics
from upnext.testing.semantics_timeouts import TimeoutSemantics
from upnext_redis import RedisBroker


class TestClusterBroker(BrokerConformance):
    """The broker contract with queues spread over three masters (results: see semantics)."""

    @pytest_asyncio.fixture
    async def broker(self, cluster_broker: RedisBroker) -> AsyncIterator[RedisBroker]:
        """The connected cluster broker (own key prefix)."""
        yield cluster_broker


class TestClusterSemantics(
    RetrySemantics,
    ErrorSemantics,
    TimeoutSemantics,
    LeaseSemantics,
    DeadLetterSemantics,
    HookSemantics,
):
    """A real Worker on the cluster."""

    @pytest.fixture
    def broker_url(self, redis_cluster_url: str, key_prefix: str) -> str:
        """The cluster URL under this test's own key prefix."""
        return f"{redis_cluster_url}&prefix={key_prefix}"
