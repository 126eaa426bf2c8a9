"""The broker contract (`upnext.broker.protocol`, `.optional`, `.state`) and memory://.

Helpers for backends: `cursor` (the dead-letter page core builds, state-scan
cursors) and `redact` (passwords out of every message).
"""

from upnext._discovery import register
from upnext.broker import cursor, redact
from upnext.broker.memory import MemoryBroker
from upnext.broker.optional import (
    ManagementStats,
    QueueStatsReader,
    SchemaProvider,
    TransactionalEnqueue,
)
from upnext.broker.protocol import (
    Ack,
    Broker,
    Capabilities,
    DeadLetter,
    DeadLetterAdmin,
    DeadLetterPage,
    DeadLetterQuery,
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
    SlotClaim,
    SlotGrant,
    StateEntry,
    StatePage,
    StateStore,
    StateWrite,
)

__all__ = [
    "Ack",
    "Broker",
    "Capabilities",
    "DeadLetter",
    "DeadLetterAdmin",
    "DeadLetterPage",
    "DeadLetterQuery",
    "DeadLetterRecord",
    "Delivery",
    "Envelope",
    "Expect",
    "ManagementStats",
    "MemoryBroker",
    "Prefetcher",
    "QueueAdmin",
    "QueueStats",
    "QueueStatsReader",
    "Release",
    "ResultStore",
    "ResultWrite",
    "Retry",
    "SchemaProvider",
    "SettleItem",
    "SettleOutcome",
    "SlotClaim",
    "SlotGrant",
    "StateEntry",
    "StatePage",
    "StateStore",
    "StateWrite",
    "TransactionalEnqueue",
    "cursor",
    "redact",
    "register",
]
