"""Durations, checked once at the edge: finite, non-negative, at most `MAX_DURATION`.

Every duration, TTL and delay a user gives (task options, `options(delay=)`,
`Worker(...)`, `wait_timeout`, `Retry(delay=)`) and every one read from a
job body passes through here, so no backend is ever handed a value it cannot
store. One maximum serves them all: 90 days, below the tightest in-tree limit
(RabbitMQ's delay ladder holds about 97 days; PostgreSQL intervals, Redis
millisecond expiries and SQLite reals hold far more).
"""

from __future__ import annotations

import math

from upnext.errors import ConfigurationError

__all__ = ["MAX_DURATION", "check_duration", "duration_problem"]

MAX_DURATION = 90 * 24 * 3600.0


def duration_problem(value: object, *, positive: bool = False) -> str | None:
    """Why `value` is not a duration upnext accepts, or None if it is one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number of seconds"
    if not math.isfinite(value):
        return "must be a finite number of seconds"
    if value < 0 or (positive and value == 0):
        return f"must be {'> 0' if positive else '>= 0'}"
    if value > MAX_DURATION:
        return f"must be at most {MAX_DURATION:.0f} s (90 days)"
    return None


def check_duration(name: str, value: object, *, positive: bool = False, owner: str = "") -> float:
    """`value` as a float, or ConfigurationError naming `name` (of `owner`) and what is wrong."""
    problem = duration_problem(value, positive=positive)
    if problem is not None:
        prefix = f"{owner}: " if owner else ""
        raise ConfigurationError(f"{prefix}invalid {name}: {value!r} ({problem})")
    return float(value)  # type: ignore[arg-type]  # duration_problem checked it is a number
