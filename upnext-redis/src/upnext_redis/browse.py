"""`JobBrowser` on Redis: a queue's waiting jobs, one read-only script per page.

Ready jobs come in hand-out order, scheduled ones by (due time, id); see
browse_scripts.py for how the script mirrors RECEIVE. A page is one script
over one queue's keys (one hash tag: Cluster-safe).

Cursors (`upnext.broker.cursor.key_cursor`): a ready one, ``"wr1."``, names
the segment and index after the last job shown and that job's id; the
script first looks for the id (an LPOS over what lies before it), so jobs
taken from the head meanwhile shift nothing. A scheduled one, ``"ws1."``,
names the last job's (due ms, id): the next page starts after that job, or,
if it has gone, at its due time.
"""

from __future__ import annotations

from typing import Any

from upnext.broker.cursor import key_cursor, parse_key_cursor
from upnext.broker.optional import WaitingJob, WaitingPage
from upnext.errors import ConfigurationError

from upnext_redis._client import RedisClient
from upnext_redis.browse_scripts import WAITING

__all__ = ["Browser"]

_READY, _SCHEDULED = "wr1.", "ws1."
_WHAT = "waiting-jobs"
_SEGMENTS = 3  # expired leases, the ready list, due delayed jobs (browse_scripts.py)


def _cursor_args(cursor: str | None, *, scheduled: bool) -> list[Any]:
    """The script's cursor arguments; ConfigurationError for a cursor not made here."""
    if scheduled:
        if cursor is None:
            return ["", ""]
        due_ms, last = parse_key_cursor(cursor, _SCHEDULED, (int, str), _WHAT)
        return [due_ms, last]
    if cursor is None:
        return [0, 0, ""]
    segment, index, last = parse_key_cursor(cursor, _READY, (int, int, str), _WHAT)
    if segment not in range(_SEGMENTS) or not 0 <= int(index) < 2**53:
        raise ConfigurationError(f"malformed {_WHAT} cursor: {cursor[:80]!r}")
    return [segment, index, last]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _page(reply: list[Any], queue: str, *, scheduled: bool) -> WaitingPage:
    """A page from a WAITING reply (layout in browse_scripts.py)."""
    # Scores are whole milliseconds; float() also reads one Redis wrote as 1.7e+12.
    jobs = [
        WaitingJob(
            _text(reply[i]),
            queue,
            reply[i + 1],
            int(reply[i + 2]),
            float(reply[i + 3]) / 1000 if scheduled else None,
        )
        for i in range(4, len(reply), 4)
    ]
    if not int(reply[0]):
        return WaitingPage(jobs, None)
    if scheduled:
        due_ms, last = int(float(reply[1])), _text(reply[2])
        return WaitingPage(jobs, key_cursor(_SCHEDULED, [due_ms, last]))
    segment, index, last = int(reply[1]), int(reply[2]), _text(reply[3])
    return WaitingPage(jobs, key_cursor(_READY, [segment, index, last]))


class Browser:
    """`waiting_jobs` for RedisBroker."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    async def waiting_jobs(
        self, queue: str, *, scheduled: bool, limit: int, cursor: str | None = None
    ) -> WaitingPage:
        """Up to `limit` waiting jobs of `queue`, in hand-out order or soonest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        args = ["s" if scheduled else "r", limit, *_cursor_args(cursor, scheduled=scheduled)]
        reply = await self._client.eval(WAITING, self._client.keys.queue(queue).group, args)
        return _page(reply, queue, scheduled=scheduled)
