"""When a cron fires: a cron expression (through croniter) or a plain interval.

Expressions have 5 fields (minute first) or 6 with **seconds first**
(``"*/10 * * * * *"`` is every 10 s); croniter reads a sixth field as seconds
*last* unless told otherwise, so it is always called with
``second_at_beginning=True``. Times are Unix timestamps; an expression is
evaluated in its `timezone` (UTC by default), DST as croniter handles it. An
interval of `every` seconds fires at the multiples of `every` since the epoch,
so every worker computes the same ticks.
"""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from upnext._durations import check_duration
from upnext.errors import ConfigurationError

__all__ = ["TICK_HEADER", "CronSchedule", "MissedRunPolicy", "tick_of"]

TICK_HEADER = "upnext-cron-tick"
"""The job header carrying the tick a cron job runs for (an ISO 8601 datetime with offset)."""


def tick_of(headers: dict[str, str] | None) -> datetime | None:
    """The tick a job runs for, from its headers (None for a job no cron fired)."""
    text = None if headers is None else headers.get(TICK_HEADER)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class MissedRunPolicy(enum.Enum):
    """What a cron does with the ticks missed while no worker ran.

    ``LATEST_ONLY`` runs the most recent missed tick once; ``CATCH_UP`` runs
    every missed tick (none older than `max_catch_up_seconds`); ``SKIP`` runs
    none and waits for the next tick.
    """

    LATEST_ONLY = "latest_only"
    CATCH_UP = "catch_up"
    SKIP = "skip"


class CronSchedule:
    """The ticks of a cron expression in a timezone, or of an interval."""

    def __init__(
        self, expression: str | None, every: float | None, timezone: str | None, owner: str
    ) -> None:
        if (expression is None) == (every is None):
            raise ConfigurationError(f"{owner}: give a cron expression or every=, not both")
        self.expression = expression
        self.every = None if every is None else check_duration("every", every, positive=True)
        self.timezone = timezone
        self.zone: tzinfo = UTC
        if every is not None:
            if timezone is not None:
                raise ConfigurationError(f"{owner}: timezone= applies to cron expressions only")
            self.text = f"every {every:g}s"
            return
        assert expression is not None
        self.text = expression = " ".join(expression.split())
        fields = len(expression.split(" "))
        if not expression.startswith("@") and fields not in (5, 6):
            raise ConfigurationError(
                f"{owner}: {expression!r} has {fields} fields (5, or 6 with seconds first)"
            )
        if not croniter.is_valid(expression, second_at_beginning=True):
            raise ConfigurationError(f"{owner}: {expression!r} is not a valid cron expression")
        if timezone is not None:
            try:
                self.zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigurationError(f"{owner}: unknown timezone {timezone!r}") from None

    def _iter(self, start: float) -> croniter:
        begin = datetime.fromtimestamp(start, self.zone)
        assert self.expression is not None
        return croniter(self.expression, begin, second_at_beginning=True)

    def next_after(self, moment: float) -> float:
        """The first tick strictly after `moment`."""
        if self.every is not None:
            step = math.floor(moment / self.every) + 1
            return (step + (step * self.every <= moment)) * self.every  # float rounding
        return self._iter(moment).get_next(datetime).timestamp()

    def recent(self, until: float, after: float | None, limit: int) -> list[float]:
        """The latest ticks in (`after`, `until`], at most `limit` of them, oldest first."""
        found: list[float] = []
        if self.every is not None:
            # Each tick is `step * every` for an int step: the same float on every worker.
            step = math.floor(until / self.every)
            step -= step * self.every > until
            while len(found) < limit and (after is None or step * self.every > after):
                found.append(step * self.every)
                step -= 1
        else:
            ticks = self._iter(until + 1e-6)  # get_prev is strict: include a tick at `until`
            while len(found) < limit:
                tick = ticks.get_prev(datetime).timestamp()
                if tick > until:
                    continue
                if after is not None and tick <= after:
                    break
                found.append(tick)
        found.reverse()
        return found

    def moment(self, tick: float) -> datetime:
        """A tick as an aware datetime in the schedule's timezone."""
        return datetime.fromtimestamp(tick, self.zone)
