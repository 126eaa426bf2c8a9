"""The broker contract (`upnext.broker.protocol`), the memory:// backend, and `Backoff`."""

from upnext._backoff import Backoff
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
from upnext.broker.state import (
    Expect,
    SlotGrant,
    StateEntry,
    StatePage,
    StateStore,
    StateWrite,
)

__all__ = [
    "Ack",
    "Backoff",
    "Broker",
    "Capabilities",
    "DeadLetter",
    "DeadLetterAdmin",
    "DeadLetterPage",
    "DeadLetterRecord",
    "Delivery",
    "Envelope",
    "Expect",
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
    "SlotGrant",
    "StateEntry",
    "StatePage",
    "StateStore",
    "StateWrite",
    "register",
]
