"""The broker contract (`upnext.broker.protocol`) and the memory:// reference backend."""

from upnext._discovery import register
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import (
    Ack,
    Broker,
    Capabilities,
    DeadLetter,
    DeadLetterAdmin,
    DeadLetterPage,
    DeadLetterRecord,
    Delivery,
    Envelope,
    Prefetcher,
    QueueAdmin,
    QueueStats,
    Release,
    ResultStore,
    ResultWrite,
    Retry,
    SettleItem,
    SettleOutcome,
)

__all__ = [
    "Ack",
    "Broker",
    "Capabilities",
    "DeadLetter",
    "DeadLetterAdmin",
    "DeadLetterPage",
    "DeadLetterRecord",
    "Delivery",
    "Envelope",
    "MemoryBroker",
    "Prefetcher",
    "QueueAdmin",
    "QueueStats",
    "Release",
    "ResultStore",
    "ResultWrite",
    "Retry",
    "SettleItem",
    "SettleOutcome",
    "register",
]
