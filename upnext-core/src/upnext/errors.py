"""Every error upnext raises, in one tree.

    UpNextError
    ├── TaskExecutionError          the job ended failed or cancelled
    │   └── TaskTimeoutError        ... because its last attempt ran past `timeout`
    ├── WaitTimeout (TimeoutError)  a wait ran out; the job goes on
    ├── NoJobContext (RuntimeError) get_current_context() outside a job
    ├── ConfigurationError          bad settings, unknown URL scheme
    ├── SerializationError          an argument or result is not JSON-able
    │   └── PayloadTooLarge         a body over `max_payload`
    ├── UnsupportedOperation        the backend lacks the capability
    ├── DeadLetterNotFound          no such entry (or already replayed/deleted)
    └── BrokerError                 the broker refused or failed
        ├── BrokerUnavailable       the broker cannot be reached
        ├── Busy                    another client holds what this call needs; try again
        └── LeaseLost               another worker may hold the job now

Control flow a task may raise (not errors): `Retry` and `Reject`, in
`upnext.control`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upnext._result import TaskResult

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "Busy",
    "ConfigurationError",
    "DeadLetterNotFound",
    "LeaseLost",
    "NoJobContext",
    "PayloadTooLarge",
    "SerializationError",
    "TaskExecutionError",
    "TaskTimeoutError",
    "UnsupportedOperation",
    "UpNextError",
    "WaitTimeout",
]


class UpNextError(Exception):
    """Base of every error upnext raises."""


class TaskExecutionError(UpNextError):
    """The job ended `failed` or `cancelled`; `task_result` holds the details."""

    def __init__(
        self, job_id: str, status: str, error: str | None, task_result: TaskResult[Any]
    ) -> None:
        super().__init__(f"job {job_id} {status}: {error}")
        self.job_id = job_id
        self.status = status
        self.error = error
        self.task_result = task_result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.status, self.error, self.task_result))


class TaskTimeoutError(TaskExecutionError):
    """The job's last attempt ran past the task's `timeout`."""


class WaitTimeout(UpNextError, TimeoutError):
    """Waiting for a result ran out of time; the job itself goes on."""


class NoJobContext(UpNextError, RuntimeError):
    """`get_current_context()` was called outside a running job."""


class ConfigurationError(UpNextError):
    """Settings that cannot work: unknown URL scheme, bad option, name clash."""


class SerializationError(UpNextError):
    """A value cannot be encoded to, or decoded from, the wire format."""


class PayloadTooLarge(SerializationError):
    """A job body is larger than the configured `max_payload`."""


class UnsupportedOperation(UpNextError):
    """The broker in use does not offer this operation (a missing capability)."""


class DeadLetterNotFound(UpNextError, LookupError):
    """No dead-letter entry with that id: never existed, replayed or deleted."""


class BrokerError(UpNextError):
    """The broker failed or refused an operation."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (connect failed, connection lost)."""


class Busy(BrokerError):
    """Another client holds what this call needs for now; the same call may succeed later.

    E.g. a dead-letter queue read sequentially, one admin at a time
    (`dlq_access="scan"`), while another admin reads it. Nothing was changed.
    """


class LeaseLost(BrokerError):
    """The job's lease expired or was taken over; its outcome was discarded."""
