"""When a failed attempt runs again: exponential backoff with a cap and jitter,
and which exceptions are worth another attempt at all (`retry_on`, `dont_retry_on`)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TypeAlias

from upnext._durations import MAX_DURATION, check_duration
from upnext.errors import ConfigurationError

__all__ = ["ExceptionFilter", "RetryPolicy", "exception_filter"]

ExceptionFilter: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]
"""What `retry_on=` and `dont_retry_on=` take: an exception class or a tuple of them."""


def exception_filter(name: str, value: object, owner: str) -> tuple[type[BaseException], ...]:
    """`value` (a class or a tuple of classes) as a tuple, or a one-line ConfigurationError."""
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigurationError(
                f"{owner}: invalid {name}: {value!r} (must be an exception class"
                " or a tuple of them)"
            )
    return classes


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before retry n is ``min(delay * backoff**(n-1), delay_max)``, plus jitter.

    Jitter is an opt-in fraction: the delay is stretched by a random factor in
    ``[1, 1 + jitter]``, so it never falls below the nominal delay.
    `retry_on` (None: every exception) and `dont_retry_on` say which
    exceptions are worth another attempt (`retryable`).
    """

    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    delay_max: float = 3600.0
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] | None = None
    dont_retry_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        check_duration("retry_delay", self.delay)
        check_duration("retry_delay_max", self.delay_max)
        checks = {
            "retries": self.retries >= 0,
            "retry_backoff": math.isfinite(self.backoff) and self.backoff >= 1.0,
            "retry_jitter": 0.0 <= self.jitter <= 10.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigurationError(f"invalid {name}: {getattr(self, _FIELD[name])!r}")

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first run plus every retry."""
        return self.retries + 1

    def retryable(self, exc: BaseException | None) -> bool:
        """Whether a failed attempt that raised `exc` may run again (attempts allowing).

        `dont_retry_on` wins over `retry_on`; `upnext.Retry` and `upnext.Reject`
        are not asked about: they keep their meaning.
        """
        if self.dont_retry_on and isinstance(exc, self.dont_retry_on):
            return False
        return self.retry_on is None or isinstance(exc, self.retry_on)

    def next_delay(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1-based)."""
        try:
            nominal = min(self.delay * self.backoff ** (retry_number - 1), self.delay_max)
        except OverflowError:  # thousands of retries: the cap has long been reached
            nominal = self.delay_max
        if self.jitter:  # stretched, but never past what every backend can store
            return min(nominal * (1.0 + random.random() * self.jitter), MAX_DURATION)
        return nominal


_FIELD = {"retries": "retries", "retry_backoff": "backoff", "retry_jitter": "jitter"}
