"""The broker contract (`upnext.broker.protocol`) and the memory:// reference backend."""

from upnext._discovery import register
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import (
    MAX_PRIORITY,
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

# Sorted plainly (test_exported_members), where ruff would put constants first.
__all__ = [  # noqa: RUF022
    "Ack",
    "Broker",
    "Capabilities",
    "DeadLetter",
    "DeadLetterAdmin",
    "DeadLetterPage",
    "DeadLetterRecord",
    "Delivery",
    "Envelope",
    "Expect",
    "MAX_PRIORITY",
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
