"""When a failed attempt runs again: exponential backoff with a cap and jitter."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from upnext._durations import MAX_DURATION, check_duration
from upnext.errors import ConfigurationError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before retry n is ``min(delay * backoff**(n-1), delay_max)``, plus jitter.

    Jitter is an opt-in fraction: the delay is stretched by a random factor in
    ``[1, 1 + jitter]``, so it never falls below the nominal delay.
    """

    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    delay_max: float = 3600.0
    jitter: float = 0.0

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
