"""upnext: async background jobs with retries, timeouts, a dead-letter queue and pluggable brokers.

worker = upnext.Worker("orders", broker="redis://localhost:6379/0")

@worker.task(retries=3, timeout=30.0)
async def charge(order_id: int) -> dict: ...

result = await charge.wait(order_id=1)
"""

from upnext._context import Context, get_current_context
from upnext._cronspec import MissedRunPolicy
from upnext._dlq import DeadLetterEntry, DeadLetterQueue, EntryPage, Payload
from upnext._future import Future
from upnext._gather import gather
from upnext._result import ErrorInfo, JobStatus, TaskResult
from upnext._run import run
from upnext._serializer import AttemptRecord
from upnext._task import Task, TaskCall
from upnext._worker import Worker
from upnext.control import Reject, Retry
from upnext.errors import (
    BrokerError,
    BrokerUnavailable,
    Busy,
    ConfigurationError,
    DeadLetterNotFound,
    LeaseLost,
    NoJobContext,
    PayloadTooLarge,
    SerializationError,
    TaskExecutionError,
    TaskTimeoutError,
    UnsupportedOperation,
    UpNextError,
    WaitTimeout,
)
from upnext.hooks import HookEvent

__all__ = [
    "AttemptRecord",
    "BrokerError",
    "BrokerUnavailable",
    "Busy",
    "ConfigurationError",
    "Context",
    "DeadLetterEntry",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "EntryPage",
    "ErrorInfo",
    "Future",
    "HookEvent",
    "JobStatus",
    "LeaseLost",
    "MissedRunPolicy",
    "NoJobContext",
    "Payload",
    "PayloadTooLarge",
    "Reject",
    "Retry",
    "SerializationError",
    "Task",
    "TaskCall",
    "TaskExecutionError",
    "TaskResult",
    "TaskTimeoutError",
    "UnsupportedOperation",
    "UpNextError",
    "WaitTimeout",
    "Worker",
    "gather",
    "get_current_context",
    "run",
]
