"""How a job's run ends: the settle item, its result, and the events to announce.

Pure decisions, no I/O: the consumer executes a job, then asks this module
what to write. Retry policy, dead-letter content and attempt history are
decided here, once, for every backend.
"""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import to_json

from upnext._result import ErrorInfo
from upnext._serializer import (
    AttemptRecord,
    DeadLetterData,
    JobBody,
    ResultRecord,
    body_json,
    check_finite,
)
from upnext._serializer import Outcome as RecordOutcome
from upnext.broker.protocol import (
    Ack,
    DeadLetter,
    DeadLetterRecord,
    Delivery,
    ResultWrite,
    Retry,
    SettleItem,
)
from upnext.control import Reject
from upnext.control import Retry as RetryRequest
from upnext.hooks import HookEvent

if TYPE_CHECKING:
    from upnext.middleware._types import Outcome

__all__ = [
    "Settlement",
    "dead_letter",
    "settle_attempt",
    "settle_cancelled",
    "settle_lost",
    "settle_success",
]

TRACEBACK_LIMIT = 16 * 1024
DEFAULT_RESULT_TTL = 3600.0


SettledStatus = Literal["complete", "failed", "cancelled", "scheduled", "released"]


@dataclass(slots=True)
class Settlement:
    """What is written for a delivery, and which events follow once it is durable.

    `item` is the broker's settle item (`Ack`, `Retry`, `DeadLetter`,
    `Release`); `result` the result written with it, if any; `status` the
    job's status after it (``scheduled``: due again later, ``released``:
    given back unchanged); `events` the hook and plugin events it announces,
    as (per-task hook attribute or None, plugin hook name, event).
    """

    item: SettleItem
    result: ResultWrite | None = None
    events: list[tuple[str | None, str, HookEvent]] = field(default_factory=list)
    status: SettledStatus = "complete"


def error_info(exc: BaseException, *, timed_out: bool = False) -> ErrorInfo:
    """An exception as stored: type, one-line message, bounded traceback."""
    tb = "".join(traceback.format_exception(exc))
    raw = tb.encode()
    if len(raw) > TRACEBACK_LIMIT:  # keep the end, where the error is; 16 KiB of UTF-8 in all
        marker = b"...(truncated)\n"
        tb = (marker + raw[len(raw) - TRACEBACK_LIMIT + len(marker) :]).decode(errors="ignore")
    return ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=tb, timed_out=timed_out)


def dead_letter(
    delivery: Delivery,
    *,
    reason: str,
    error: ErrorInfo,
    body: JobBody | None,
    function: str = "",
    attempts: int = 0,
    max_attempts: int = 0,
    started: float | None = None,
    exception: BaseException | None = None,
) -> Settlement:
    """Dead-letter a delivery now, with a `failed` result and the events that follow."""
    envelope = delivery.envelope
    now = time.time()
    if body is None:
        data = DeadLetterData.for_raw(reason, error, envelope.body)
    else:
        data = DeadLetterData(reason=reason, error=error, body=body, priority=envelope.priority)
    record = DeadLetterRecord(
        id=uuid.uuid4().hex,
        job_id=envelope.id,
        queue=envelope.queue,
        function=body.fn if body is not None else function,
        reason=reason,
        failed_at=now,
        data=data.to_json(),
    )
    result_record = ResultRecord(
        s="failed",
        fn=record.function,
        at=attempts,
        st=started,
        ct=now,
        p=body.parent_id if body else None,
        r=body.root_id if body else None,
        e=error,
    )
    result = ResultWrite(
        envelope.id,
        envelope.queue,
        result_record.model_dump_json().encode(),
        body.result_ttl if body is not None else DEFAULT_RESULT_TTL,
        body.reply_to if body is not None else None,
    )
    event = HookEvent(
        job_id=envelope.id,
        function=record.function,
        queue=envelope.queue,
        attempt=attempts,
        max_attempts=max_attempts,
        status="failed",
        error=str(error),
        exception=exception,
        reason=reason,
    )
    events: list[tuple[str | None, str, HookEvent]] = [
        ("on_failure", "upnext_job_failed", event),
        (None, "upnext_job_dead_lettered", event),
        ("on_complete", "upnext_job_completed", event),
    ]
    return Settlement(DeadLetter(delivery, record), result, events, "failed")


def settle_lost(delivery: Delivery, body: JobBody, max_lost_runs: int) -> tuple[Settlement, bool]:
    """Record the lost runs a redelivery reveals; (settlement, dead-lettered?).

    The body is written back (or dead-lettered) before the job runs again, so
    a job that kills its worker every time still reaches the DLQ.
    """
    lost_now = max((delivery.deliveries or 2) - 1, 1)
    now = time.time()
    history = list(body.history)
    history.extend(
        AttemptRecord(number=body.attempts + 1, outcome="lost", finished=now, error="worker lost")
        for _ in range(lost_now)
    )
    updated = body.model_copy(update={"lost": body.lost + lost_now, "history": history})
    if updated.lost > max_lost_runs:
        error = ErrorInfo(
            type="WorkerLost",
            message=f"the worker running it was lost {updated.lost} times",
        )
        return dead_letter(
            delivery, reason="worker lost", error=error, body=updated, attempts=body.attempts
        ), True
    retry = Retry(delivery, body_json(updated), 0.0)
    return Settlement(retry, status="scheduled"), False


def settle_success(
    delivery: Delivery, attempt: Outcome, value_json: Any, announce: bool
) -> Settlement:
    """Ack a completed job with its result (the hot path: no models validated).

    SerializationError if the value holds NaN or Infinity, which JSON can't hold.
    """
    body = attempt.body
    data = to_json(
        {
            "s": "complete",
            "v": value_json,
            "fn": body.fn,
            "at": attempt.number,
            "st": attempt.started,
            "ct": attempt.finished,
            "p": body.parent_id,
            "r": body.root_id or body.id,
        }
    )
    check_finite(data, f"the result of {body.fn}")
    result = ResultWrite(body.id, body.queue, data, body.result_ttl, body.reply_to)
    if not announce:
        return Settlement(Ack(delivery), result)
    event = HookEvent(
        job_id=body.id,
        function=body.fn,
        queue=body.queue,
        attempt=attempt.number,
        max_attempts=attempt.task.policy.max_attempts,
        status="complete",
        result=attempt.value,
    )
    events: list[tuple[str | None, str, HookEvent]] = [
        ("on_success", "upnext_job_succeeded", event),
        ("on_complete", "upnext_job_completed", event),
    ]
    return Settlement(Ack(delivery), result, events)


def settle_attempt(delivery: Delivery, attempt: Outcome) -> Settlement:
    """The settlement of a failed attempt: retry or dead-letter."""
    task, body, kind = attempt.task, attempt.body, attempt.kind
    assert kind != "cancelled"  # a cancelled attempt settles with settle_cancelled
    exc = attempt.exception
    info = None if exc is None else error_info(exc, timed_out=kind == "timeout")
    history = _history(attempt, kind, info)
    event = HookEvent(
        job_id=body.id,
        function=body.fn,
        queue=body.queue,
        attempt=attempt.number,
        max_attempts=task.policy.max_attempts,
        status="complete",
        result=attempt.value,
        error=None if info is None else str(info),
        exception=exc,
    )
    assert info is not None
    # Retry and Reject keep their meaning; the filters judge errors and timeouts.
    retryable = kind == "retry" or (kind != "rejected" and task.policy.retryable(exc))
    if retryable and attempt.number < task.policy.max_attempts:
        if isinstance(exc, RetryRequest):
            delay = exc.delay or 0.0  # Retry() means now
        else:
            delay = task.policy.next_delay(attempt.number)
        retry_body = body.model_copy(update={"attempts": attempt.number, "history": history})
        retry_event = _with(event, status="scheduled", next_delay=delay)
        return Settlement(
            Retry(delivery, body_json(retry_body), delay),
            events=[("on_retry", "upnext_job_retrying", retry_event)],
            status="scheduled",
        )
    if isinstance(exc, Reject):
        reason = "rejected"
    else:
        reason = "retries exhausted" if retryable else "not retryable"
    failed_body = body.model_copy(update={"attempts": attempt.number, "history": history})
    return dead_letter(
        delivery,
        reason=reason,
        error=info,
        body=failed_body,
        attempts=attempt.number,
        max_attempts=task.policy.max_attempts,
        started=attempt.started,
        exception=exc,
    )


def settle_unserializable_result(
    delivery: Delivery, attempt: Outcome, exc: BaseException
) -> Settlement:
    """A success whose value cannot be stored: the job failed, dead-lettered, never retried."""
    info = ErrorInfo(type="SerializationError", message=str(exc))
    failed = attempt.body.model_copy(
        update={"attempts": attempt.number, "history": _history(attempt, "error", info)}
    )
    return dead_letter(
        delivery,
        reason="unserializable result",
        error=info,
        body=failed,
        attempts=attempt.number,
        max_attempts=attempt.task.policy.max_attempts,
        started=attempt.started,
        exception=exc,
    )


def settle_cancelled(
    delivery: Delivery,
    body: JobBody,
    *,
    reason: str,
    attempts: int,
    max_attempts: int,
    started: float | None = None,
) -> Settlement:
    """Ack a job that will not run (again) with a `cancelled` result: no retry, no DLQ."""
    error = ErrorInfo(type="Cancelled", message=reason)
    record = ResultRecord(
        s="cancelled",
        fn=body.fn,
        at=attempts,
        st=started,
        ct=time.time(),
        p=body.parent_id,
        r=body.root_id or body.id,
        e=error,
    )
    data = record.model_dump_json().encode()
    result = ResultWrite(body.id, body.queue, data, body.result_ttl, body.reply_to)
    event = HookEvent(
        job_id=body.id,
        function=body.fn,
        queue=body.queue,
        attempt=attempts,
        max_attempts=max_attempts,
        status="cancelled",
        error=str(error),
        reason=reason,
    )
    events: list[tuple[str | None, str, HookEvent]] = [
        ("on_complete", "upnext_job_completed", event)
    ]
    return Settlement(Ack(delivery, None), result, events, "cancelled")


def _history(
    attempt: Outcome, outcome: RecordOutcome, info: ErrorInfo | None
) -> list[AttemptRecord]:
    """The body's attempt history with this attempt appended."""
    record = AttemptRecord(
        number=attempt.number,
        outcome=outcome,
        worker=attempt.worker_id,
        started=attempt.started,
        finished=attempt.finished,
        error=None if info is None else str(info),
    )
    return [*attempt.body.history, record]


def _with(event: HookEvent, **changes: Any) -> HookEvent:
    from dataclasses import replace

    return replace(event, **changes)
