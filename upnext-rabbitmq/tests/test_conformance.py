"""The shared conformance suite against a real RabbitMQ."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from upnext.testing import (
    BrokerConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    ResultStoreConformance,
)
from upnext_rabbitmq import RabbitBroker


class TestRabbitBroker(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
):
    """Every contract test; the `broker` fixture comes from conftest."""

    @pytest.mark.asyncio
    async def test_dlq_purge_all(
        self,
        private_vhost_url: str,  # first: the vhost outlives the broker
        make_broker: Callable[..., Awaitable[RabbitBroker]],
        upnext_queues: Callable[[int], list[str]],
    ) -> None:
        """On a vhost of its own: on the shared one it would wipe every other DLQ there."""
        broker = await make_broker(url=private_vhost_url)
        await super().test_dlq_purge_all(broker, upnext_queues)
