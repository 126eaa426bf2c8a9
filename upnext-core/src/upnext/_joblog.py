"""One log line per job's settlement, on the ``upnext.job`` logger.

The worker writes a line once a settlement is durable, from the fixed tail
(`JobExecutor`), not from an `after_settle` middleware: that stage runs as a
background task per job, which costs more than the line itself. The executor
asks ``JOB_LOG.isEnabledFor(INFO)`` once per job; when it is off, nothing
else here runs. Messages are %-style with their arguments, so a handler
formats them (the CLI's, off the event loop).

Each record carries the fields a structured formatter needs as attributes
(``extra``): `job_id`, `task`, `queue`, `attempt`, `max_attempts`,
`outcome`, and where they apply `duration_ms`, `delay_s`, `error`, `reason`.

While `upnext worker`'s own handler is the only one (the command installs
it; see `upnext.cli._logging`), an INFO line skips the logging module on the
event loop: its time, message, arguments and fields go as one tuple to a
*line sink* (`set_line_sink`), the handler's queue, and its writer thread
makes the record. That is ~0.1 us on the loop instead of ~10 us.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from upnext.broker.protocol import Ack, DeadLetter, Release, Retry

if TYPE_CHECKING:
    from upnext._jobrun import JobRun
    from upnext._settlement import Settlement
    from upnext.broker.protocol import Delivery
    from upnext.middleware._types import Job

__all__ = [
    "JOB_FIELDS",
    "JOB_LOG",
    "JobLine",
    "log_given_back",
    "log_received",
    "log_settled",
    "log_started",
    "set_line_sink",
]

JOB_LOG = logging.getLogger("upnext.job")

# (time.time(), level, message, its arguments, extra fields): a record not yet made.
JobLine = tuple[float, int, str, tuple[Any, ...], dict[str, Any]]


class _Lines:
    """Where INFO job lines go: None, the logging module; else this callable."""

    sink: Callable[[JobLine], object] | None = None


def set_line_sink(sink: Callable[[JobLine], object] | None) -> None:
    """Send INFO job lines to `sink` instead of the logging module (None: back to it).

    Only for a sink that makes records off the event loop and gives them to
    every handler the ``upnext.job`` logger would (`upnext.cli._logging`).
    """
    _Lines.sink = sink


def _info(message: str, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
    """An INFO line: to the line sink if one is set, else through `JOB_LOG`."""
    sink = _Lines.sink
    if sink is None:
        JOB_LOG.info(message, *args, extra=fields, stacklevel=2)
    else:
        sink((time.time(), logging.INFO, message, args, fields))


# The record attributes a job line may carry (the JSON formatter writes those present).
JOB_FIELDS = (
    "job_id",
    "task",
    "queue",
    "attempt",
    "max_attempts",
    "outcome",
    "duration_ms",
    "delay_s",
    "error",
    "reason",
)
_ERROR_CHARS = 300  # an error's first line, cut here: one line a person reads


def log_received(deliveries: list[Delivery]) -> None:
    """DEBUG: each delivery just received (nothing is done while DEBUG is off)."""
    if not deliveries or not JOB_LOG.isEnabledFor(logging.DEBUG):
        return
    for delivery in deliveries:
        envelope = delivery.envelope
        JOB_LOG.debug(
            "job %s received from queue %s%s",
            envelope.id,
            envelope.queue,
            " (redelivered)" if delivery.redelivered else "",
            extra={"job_id": envelope.id, "queue": envelope.queue},
        )


def log_started(job: Job) -> None:
    """DEBUG: the attempt's body starts now."""
    if JOB_LOG.isEnabledFor(logging.DEBUG):
        JOB_LOG.debug(
            "job %s %s attempt %d/%d started",
            job.id,
            job.function,
            job.attempt,
            job.max_attempts,
            extra=_fields(job, "started"),
        )


def log_given_back(job: Job | None, run: JobRun, why: str) -> None:
    """INFO: a started attempt was given back unfinished (uncounted), e.g. at shutdown."""
    envelope = run.delivery.envelope
    function = job.function if job is not None else ""
    attempt = job.attempt if job is not None else 0
    _info(
        "job %s %s attempt %d given back unfinished (%s): it runs again, uncounted",
        (
            envelope.id,
            function,
            attempt,
            why,
        ),
        {
            "job_id": envelope.id,
            "task": function,
            "queue": envelope.queue,
            "attempt": attempt,
            "outcome": "released",
            "reason": why,
        },
    )


def log_settled(job: Job, run: JobRun, settlement: Settlement) -> None:
    """INFO (DEBUG for a middleware's Delay or Release): how `job`'s delivery was settled."""
    item = settlement.item
    if isinstance(item, Ack):
        if settlement.status == "cancelled":
            _cancelled(job, run, settlement)
        else:
            _succeeded(job, run)
    elif isinstance(item, Retry):
        if job.redelivered:  # the fixed head found lost runs: written back, not run
            _lost(job, item.delay, None)
        elif settlement.events:
            _retrying(job, run, settlement, item.delay)
        else:
            fields = _fields(job, "delayed", delay_s=item.delay)
            JOB_LOG.debug(
                "job %s %s delayed %.3g s by middleware (no attempt charged)",
                job.id,
                job.function,
                item.delay,
                extra=fields,
            )
    elif isinstance(item, DeadLetter):
        if job.redelivered:
            _lost(job, None, item.record.reason)
        else:
            _dead_lettered(job, run, settlement, item.record.reason)
    elif isinstance(item, Release):
        JOB_LOG.debug(
            "job %s %s released unrun by middleware",
            job.id,
            job.function,
            extra=_fields(job, "released"),
        )


def _succeeded(job: Job, run: JobRun) -> None:
    # The line of nearly every job: its fields spelled out (no keyword packing).
    duration = _duration_ms(run)
    job_id, function, attempt, most = job.id, job.function, job.attempt, job.max_attempts
    _info(
        "job %s %s attempt %d/%d succeeded in %.1f ms",
        (job_id, function, attempt, most, duration),
        {
            "job_id": job_id,
            "task": function,
            "queue": job.queue,
            "attempt": attempt,
            "max_attempts": most,
            "outcome": "succeeded",
            "duration_ms": duration,
        },
    )


def _retrying(job: Job, run: JobRun, settlement: Settlement, delay: float) -> None:
    error = _error_of(settlement)
    duration = _duration_ms(run)
    _info(
        "job %s %s attempt %d/%d failed after %.1f ms: %s; retrying in %.3g s",
        (
            job.id,
            job.function,
            job.attempt,
            job.max_attempts,
            duration,
            error,
            delay,
        ),
        _fields(job, "retrying", duration_ms=duration, delay_s=delay, error=error),
    )


def _dead_lettered(job: Job, run: JobRun, settlement: Settlement, reason: str) -> None:
    error = _error_of(settlement)
    # attempts charged, as the dead letter records them (none for a job that never ran)
    attempt = next((event.attempt for _, _, event in settlement.events), job.attempt)
    duration = _duration_ms(run) if run.started is not None else None
    _info(
        "job %s %s dead-lettered (%s) after %d/%d attempts: %s",
        (
            job.id,
            job.function or "<undecodable>",
            reason,
            attempt,
            job.max_attempts,
            error,
        ),
        _fields(
            job, "dead_lettered", attempt=attempt, duration_ms=duration, error=error, reason=reason
        ),
    )


def _lost(job: Job, delay: float | None, dead_reason: str | None) -> None:
    lost_before = job.body.lost if job.body is not None else 0
    then = "runs again" if dead_reason is None else f"dead-lettered ({dead_reason})"
    _info(
        "job %s %s lost its worker during attempt %d (lost runs so far: %d); %s",
        (
            job.id,
            job.function,
            job.attempt,
            lost_before + max((job.delivery.deliveries or 2) - 1, 1),
            then,
        ),
        _fields(
            job,
            "lost" if dead_reason is None else "dead_lettered",
            delay_s=delay,
            reason=dead_reason or "worker lost",
        ),
    )


def _cancelled(job: Job, run: JobRun, settlement: Settlement) -> None:
    reason = next((event.reason for _, _, event in settlement.events if event.reason), "cancelled")
    ran = run.started is not None
    _info(
        "job %s %s cancelled %s (%s)",
        (
            job.id,
            job.function,
            f"during attempt {job.attempt}" if ran else "before it ran",
            reason,
        ),
        _fields(job, "cancelled", reason=reason),
    )


def _fields(job: Job, outcome: str, **more: Any) -> dict[str, Any]:
    fields = {
        "job_id": job.id,
        "task": job.function,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "outcome": outcome,
    }
    for key, value in more.items():  # a loop, not a generator: once per job line
        if value is not None:
            fields[key] = value
    return fields


def _duration_ms(run: JobRun) -> float:
    """How long the attempt's body ran (0 when it never started)."""
    if run.started is None or run.finished is None:
        return 0.0
    # To the microsecond; `round(x, 3)` would go through a decimal string (~4x the cost).
    return round((run.finished - run.started) * 1e6) / 1000


def _error_of(settlement: Settlement) -> str:
    """The settlement's error, first line only, cut to a readable length."""
    error = next((event.error for _, _, event in settlement.events if event.error), "") or ""
    line = error.strip().splitlines()[0] if error.strip() else "no error recorded"
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."
