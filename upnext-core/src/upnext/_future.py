"""`Future`: a handle on a submitted job, to wait for its result or cancel it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from upnext._context import current_scope
from upnext._durations import check_duration
from upnext._result import ErrorInfo, TaskResult, raise_for_failure
from upnext._serializer import ResultRecord
from upnext._unique import cut_claim
from upnext.errors import UnsupportedOperation, WaitTimeout

if TYPE_CHECKING:
    from upnext._task import Task

__all__ = ["Future"]

R = TypeVar("R")

# A wait is split into slices so a waiter never holds anything for long.
_WAIT_SLICE = 30.0


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def build_result(task: Task[Any, R], job_id: str, data: bytes) -> TaskResult[R]:
    """Turn a stored result record into the caller's TaskResult."""
    record = ResultRecord.model_validate_json(data)
    ok = record.s == "complete"
    return TaskResult(
        value=task.signature.load_result(record.v) if ok else None,
        job_id=job_id,
        function=record.fn,
        function_name=task.function_name,
        status=record.s,
        ok=ok,
        started_at=_ts(record.st),
        completed_at=_ts(record.ct),
        attempts=record.at,
        parent_id=record.p,
        root_id=record.r,
        error=None if record.e is None else str(record.e),
        error_info=record.e,
    )


class Future(Generic[R]):
    """A submitted job: its id, and ways to wait for it or cancel it.

    Waiting never touches the job: a wait that times out raises `WaitTimeout`
    and the job goes on. `duplicate` is True when the submit that made this
    Future enqueued nothing because the job's unique key was already held
    (docs/scheduling.md#unique-jobs): the job is someone else's.
    """

    __slots__ = ("duplicate", "job_id", "queue", "task")

    def __init__(
        self, task: Task[Any, R], job_id: str, queue: str, *, duplicate: bool = False
    ) -> None:
        self.task = task
        self.job_id = job_id
        self.queue = queue
        self.duplicate = duplicate

    def __repr__(self) -> str:
        tail = " duplicate" if self.duplicate else ""
        return f"<Future {self.task.name} job_id={self.job_id}{tail}>"

    async def result(self, timeout: float | None = None) -> TaskResult[R]:
        """Wait for the job to end; its TaskResult, or TaskExecutionError if it failed.

        Raises `WaitTimeout` after `timeout` seconds (None waits as long as it takes).
        Inside a job, the waiting job lends its concurrency slot while it waits.
        """
        if timeout is not None:
            check_duration("timeout", timeout)
        scope = current_scope.get()
        lender = scope.worker if scope is not None and scope.worker.running else None
        if lender is not None:
            lender.lend_slot()
        try:
            data = await self._wait(timeout)
        finally:
            if lender is not None:
                lender.return_slot()
        result = build_result(self.task, self.job_id, data)
        raise_for_failure(result)
        return result

    async def _wait(self, timeout: float | None) -> bytes:
        store = (await self.task.worker.client()).store
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            data = await store.get_result(
                self.job_id, queue=self.queue, wait=max(min(left, _WAIT_SLICE), 0.0)
            )
            if data is not None:
                return data
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {self.job_id} not finished after {timeout}s")

    async def value(self, timeout: float | None = None) -> R:
        """Wait for the job and return its value (raises like `result`)."""
        result = await self.result(timeout)
        return result.value  # type: ignore[return-value]  # ok results carry their value

    async def cancel(self) -> bool:
        """Remove the job if it has not started; True if it was cancelled.

        A cancelled job gets a `cancelled` result, so its waiters raise
        TaskExecutionError(status="cancelled"); a unique job's key is held as
        long as that result. Returns False when the job is
        running or finished. Raises UnsupportedOperation on a broker without
        the `cancel_queued` capability.
        """
        client = await self.task.worker.client()
        if not client.broker.capabilities.cancel_queued:
            raise UnsupportedOperation(f"{client.name} cannot cancel queued jobs")
        if not await client.broker.cancel(self.queue, self.job_id):
            return False
        error = ErrorInfo(type="Cancelled", message="cancelled before it started")
        written = time.time()
        record = ResultRecord(s="cancelled", fn=self.task.name, ct=written, e=error)
        await client.put_result(self.job_id, self.queue, record, self.task.result_ttl)
        if client.state is not None:  # a unique job's key lives as long as its result
            left = self.task.result_ttl - (time.time() - written)
            await cut_claim(client.state, self.queue, self.job_id, self.job_id, left)
        return True

    def result_sync(self, timeout: float | None = None) -> TaskResult[R]:
        """Blocking twin of `result`."""
        return self.task.worker.portal.call(self.result(timeout))

    def value_sync(self, timeout: float | None = None) -> R:
        """Blocking twin of `value`."""
        return self.task.worker.portal.call(self.value(timeout))

    def cancel_sync(self) -> bool:
        """Blocking twin of `cancel`."""
        return self.task.worker.portal.call(self.cancel())
