"""The shared conformance suite against a real RabbitMQ."""

from __future__ import annotations

from upnext.testing import (
    BrokerConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
    ResultStoreConformance,
)


class TestRabbitBroker(
    BrokerConformance,
    ResultStoreConformance,
    DeadLetterAdminConformance,
    QueueAdminConformance,
):
    """Every contract test; the `broker` fixture comes from conftest."""
