"""The broker contract (`upnext.broker.protocol`, `.optional`, `.state`) and memory://.

Helpers for backends: `cursor` (the dead-letter page core builds, state-scan
cursors) `redact` (passwords out of every message) and
`Backoff` (one schedule for every retry pause).
"""

from upnext._backoff import Backoff
from upnext._discovery import register
from upnext.broker import cursor, redact
from upnext.broker.memory import MemoryBroker
from upnext.broker.optional import (
    JobBrowser,
    ManagementStats,
    QueueStatsReader,
    SchemaProvider,
    TransactionalEnqueue,
    WaitingJob,
    WaitingPage,
    WakeableReceive,
)
from upnext.broker.protocol import (
    MAX_PRIORITY,
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

# Sorted plainly (test_exported_members), where ruff would put constants first.
__all__ = [  # noqa: RUF022
    "Ack",
    "Backoff",
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
    "JobBrowser",
    "MAX_PRIORITY",
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
    "WaitingJob",
    "WaitingPage",
    "WakeableReceive",
    "cursor",
    "redact",
    "register",
]
