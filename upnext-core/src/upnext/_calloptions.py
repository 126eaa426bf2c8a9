"""`CallOptions`: what one submit may choose, and how options given twice merge."""

from __future__ import annotations

from dataclasses import dataclass, replace

from upnext._durations import check_duration
from upnext.broker.protocol import MAX_PRIORITY
from upnext.errors import ConfigurationError

__all__ = ["CallOptions", "check_priority", "merge_options"]


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call options: `delay` before the job is due, its `queue` and `job_id`,
    `connection`: the caller's own database connection, so the job is enqueued in
    the caller's transaction (brokers with `transactional_enqueue`), and `priority`
    (0 to `MAX_PRIORITY`, higher more urgent), which the job keeps through retries;
    `expires`: seconds after it is due by which its first attempt must start
    (None: the task's own `expires`); `unique_for`: seconds the job's unique key
    drops repeats after the first submit (throttle); `debounce`: seconds after the
    last submit of the key that its one job runs (docs/scheduling.md#unique-jobs)."""

    delay: float = 0.0
    queue: str | None = None
    job_id: str | None = None
    connection: object | None = None
    priority: int = 0
    expires: float | None = None
    unique_for: float | None = None
    debounce: float | None = None


def merge_options(
    base: CallOptions,
    delay: float | None,
    queue: str | None,
    job_id: str | None,
    connection: object | None = None,
    priority: int | None = None,
    expires: float | None = None,
    unique_for: float | None = None,
    debounce: float | None = None,
) -> CallOptions:
    """`base` with the options given (not None) replaced, each checked first."""
    if delay is not None:
        delay = check_duration("delay", delay)
    if priority is not None:
        check_priority(priority)
    if expires is not None:
        expires = check_duration("expires", expires, positive=True)
    if job_id is not None and (not isinstance(job_id, str) or not job_id):
        raise ConfigurationError(f"invalid job_id: {job_id!r} (must be a non-empty str)")
    if unique_for is not None:
        unique_for = check_duration("unique_for", unique_for, positive=True)
    if debounce is not None:
        debounce = check_duration("debounce", debounce, positive=True)
    merged = replace(
        base,
        delay=base.delay if delay is None else delay,
        queue=queue or base.queue,
        job_id=job_id or base.job_id,
        connection=base.connection if connection is None else connection,
        priority=base.priority if priority is None else priority,
        expires=base.expires if expires is None else expires,
        unique_for=base.unique_for if unique_for is None else unique_for,
        debounce=base.debounce if debounce is None else debounce,
    )
    if merged.unique_for is not None and merged.debounce is not None:
        raise ConfigurationError("unique_for and debounce are two modes: choose one")
    if merged.debounce is not None and merged.delay:
        raise ConfigurationError("debounce sets the delay itself: leave delay out")
    return merged


def check_priority(priority: object) -> None:
    """Refuse anything but an int from 0 to MAX_PRIORITY (a bool too), in one line."""
    # A bool is an int to Python, never a priority anyone meant.
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"invalid priority: {priority!r} (must be an int)")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ConfigurationError(
            f"invalid priority: {priority!r} (must be from 0 to {MAX_PRIORITY}, higher first)"
        )
