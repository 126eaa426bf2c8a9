"""A task's flow limits: `rate_limit=`, `rate_key=`, `max_concurrency=`, `concurrency_key=`.

Checked where the task is decorated (a bad value is a one-line
`ConfigurationError` there, before any job exists); applied by the
`FlowLimits` middleware (`upnext._flow_limits`) when a job is about to start.
See docs/flow-control.md.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from upnext._unique import check_unique_template
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._task import Task

__all__ = ["KeyOf", "TaskLimits", "parse_rate", "task_limits"]

KeyOf = str | Callable[..., object]
"""A limit's key: a template naming the task's parameters (``"{tenant}"``), or a
function called with the job's arguments, as the task is."""

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([a-z]+)\s*")
_MAX_KEY = 200  # characters of a key's value: it becomes part of a state key


def parse_rate(spec: object, owner: str) -> tuple[int, float]:
    """``"10/minute"`` as (10, 60.0): at most that many starts in any window that long.

    Units: ``second``/``s``, ``minute``/``m``, ``hour``/``h``, ``day``/``d``
    (also ``sec``, ``min`` and plurals). A bad spec is a one-line error.
    """
    match = _RATE.fullmatch(spec.lower()) if isinstance(spec, str) else None
    if match is None or match.group(2) not in _UNITS:
        raise ConfigurationError(
            f"{owner}: invalid rate_limit {spec!r} (write it as '10/second', '10/minute',"
            " '10/hour' or '10/day'; also '10/s', '10/m', '10/h', '10/d')"
        )
    count = int(match.group(1))
    if count < 1:
        raise ConfigurationError(f"{owner}: invalid rate_limit {spec!r} (at least 1 start)")
    return count, _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """What `FlowLimits` enforces for one task (None: no such limit)."""

    rate: tuple[int, float] | None = None  # (starts, window in seconds)
    rate_key: KeyOf | None = None
    max_concurrency: int | None = None
    concurrency_key: KeyOf | None = None

    def rate_of(self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> str:
        """The rate limit's state key suffix for a job of `task` with these arguments."""
        return _suffix(task, self.rate_key, "rate_key", args, kwargs)

    def concurrency_of(self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> str:
        """The concurrency limit's state key suffix for a job of `task`."""
        return _suffix(task, self.concurrency_key, "concurrency_key", args, kwargs)


def task_limits(
    fn: Callable[..., Any],
    owner: str,
    *,
    rate_limit: str | None,
    rate_key: KeyOf | None,
    max_concurrency: int | None,
    concurrency_key: KeyOf | None,
) -> TaskLimits | None:
    """The checked limits of a task (None when it has none)."""
    rate = None if rate_limit is None else parse_rate(rate_limit, owner)
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ConfigurationError(
            f"{owner}: max_concurrency must be an int >= 1, got {max_concurrency!r}"
        )
    if rate_key is not None and rate is None:
        raise ConfigurationError(f"{owner}: rate_key needs rate_limit=")
    if concurrency_key is not None and max_concurrency is None:
        raise ConfigurationError(f"{owner}: concurrency_key needs max_concurrency=")
    if rate is None and max_concurrency is None:
        return None
    return TaskLimits(
        rate,
        _checked_key(rate_key, fn, owner, "rate_key"),
        max_concurrency,
        _checked_key(concurrency_key, fn, owner, "concurrency_key"),
    )


def _checked_key(key: object, fn: Callable[..., Any], owner: str, name: str) -> KeyOf | None:
    if inspect.iscoroutinefunction(key):
        raise ConfigurationError(f"{owner}: {name} must be a plain function, not async")
    if key is None or callable(key):
        return key
    return check_unique_template(key, fn, owner, option=name)


def _suffix(
    task: Task[Any, Any],
    key: KeyOf | None,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
) -> str:
    """``<task>`` or ``<task>:<key's value>``; a key that cannot be made is a one-line error."""
    if key is None:
        return task.name
    try:
        if callable(key):
            value = key(*args, **kwargs)
        else:
            value = key.format(**task.signature.bound(tuple(args), kwargs))
    except Exception as exc:
        raise ConfigurationError(f"task {task.name}: {name} failed: {exc!r}") from None
    if inspect.isawaitable(value):  # an async callable that `iscoroutinefunction` missed
        if inspect.iscoroutine(value):
            value.close()
        raise ConfigurationError(f"task {task.name}: {name} must return a value, not an awaitable")
    text = str(value)
    if not text or len(text) > _MAX_KEY:
        raise ConfigurationError(
            f"task {task.name}: {name} gave {text[:40]!r} (1 to {_MAX_KEY} characters)"
        )
    return f"{task.name}:{text}"
