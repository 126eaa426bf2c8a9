"""What a finished job tells its caller: `TaskResult` and the error details."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["ErrorInfo", "JobStatus", "TaskResult"]

T = TypeVar("T")

JobStatus = Literal["queued", "scheduled", "active", "complete", "failed", "cancelled"]
FINAL_STATUSES = frozenset({"complete", "failed", "cancelled"})


class ErrorInfo(BaseModel):
    """Why a job failed: exception type, message, traceback, and whether it timed out."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    traceback: str | None = None
    timed_out: bool = False

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


class TaskResult(BaseModel, Generic[T]):
    """The outcome of a finished job, as the caller sees it.

    `attempts` is the final `ctx.attempt`; `error` is ``"Type: message"`` or
    None; `error_info.timed_out` is True exactly when the last attempt ran past
    the task's timeout.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    value: T | None = None
    job_id: str
    function: str
    function_name: str
    status: JobStatus
    ok: bool
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempts: int = 0
    parent_id: str | None = None
    root_id: str | None = None
    error: str | None = None
    error_info: ErrorInfo | None = None


def raise_for_failure(result: TaskResult[Any]) -> None:
    """Raise TaskExecutionError (or TaskTimeoutError) unless the job completed."""
    if result.ok:
        return
    from upnext.errors import TaskExecutionError, TaskTimeoutError

    timed_out = result.error_info is not None and result.error_info.timed_out
    cls = TaskTimeoutError if timed_out else TaskExecutionError
    raise cls(result.job_id, result.status, result.error, result)
