"""Exceptions a task raises on purpose to steer its own job."""

from __future__ import annotations

from upnext._durations import duration_problem as _duration_problem

__all__ = ["Reject", "Retry"]


class Retry(Exception):
    """Retry this job now, or after `delay` seconds; counts as an attempt.

    On the last attempt the job is dead-lettered like any other failure.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        if delay is not None and (problem := _duration_problem(delay)) is not None:
            raise ValueError(f"invalid Retry delay: {delay!r} ({problem})")
        self.delay = delay
        self.reason = reason


class Reject(Exception):
    """Dead-letter this job now, keeping its remaining attempts unused."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
