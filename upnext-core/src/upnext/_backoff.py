"""`Backoff`: the pauses between tries of something that failed, growing to a cap.

Core and every backend wait with it wherever they try again after a failure
(a reconnect, a refused settle, a busy resource), so every such loop grows
its pauses the same way. It is not the task retry policy (`RetryPolicy`),
whose delays are user settings judged by the broker.
"""

from __future__ import annotations

import math
import random

__all__ = ["Backoff"]


class Backoff:
    """Exponential pauses with a cap and optional jitter: ``first, first*factor, ...``.

    ``next(backoff)`` gives the pause before the next try; `reset()` starts
    over (call it after a success). With `jitter` j, each pause is scaled by
    a random factor in ``[1 - j, 1]``, so that clients that failed together
    spread their next tries apart without ever waiting longer than `cap`.
    Iterating gives pauses for ever; the caller decides when to give up.

    >>> backoff = Backoff(first=0.05, cap=0.2)
    >>> [next(backoff) for _ in range(4)]
    [0.05, 0.1, 0.2, 0.2]
    """

    __slots__ = ("_nominal", "cap", "factor", "first", "jitter")

    def __init__(
        self, first: float, cap: float, *, factor: float = 2.0, jitter: float = 0.0
    ) -> None:
        if not (math.isfinite(first) and first > 0):
            raise ValueError(f"Backoff first must be a finite number > 0, got {first!r}")
        if not (math.isfinite(cap) and cap >= first):
            raise ValueError(f"Backoff cap must be finite and >= first ({first}), got {cap!r}")
        if not (math.isfinite(factor) and factor >= 1):
            raise ValueError(f"Backoff factor must be a finite number >= 1, got {factor!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"Backoff jitter must be between 0 and 1, got {jitter!r}")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._nominal = first

    def __repr__(self) -> str:
        return (
            f"Backoff(first={self.first}, cap={self.cap}, factor={self.factor}, "
            f"jitter={self.jitter})"
        )

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        """The pause before the next try (seconds); the one after grows by `factor`."""
        pause = self._nominal
        self._nominal = min(pause * self.factor, self.cap)
        if self.jitter:
            pause *= 1.0 - random.random() * self.jitter
        return pause

    def reset(self) -> None:
        """Start over from `first` (after a success)."""
        self._nominal = self.first
