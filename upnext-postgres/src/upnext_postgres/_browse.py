"""`JobBrowser` for `PostgresBroker`: a queue's waiting jobs by keyset pages, read-only.

Ready jobs come in receive's order: rows whose lease ran out, by
``(lease_until, seq)`` over the ``jobs_leased`` index (held rows only, so
bounded by the work in flight), then due rows by ``(due_at, seq)`` over
``jobs_ready``. Scheduled jobs are the rows of ``jobs_ready`` due later, by
``(due_at, seq)``. Each page is one statement that reads `limit` + 1 rows
from where the cursor points (O(log n + limit)); no index was added.

A cursor (`upnext.broker.cursor.key_cursor`) names the last row shown:
``"pr1."`` with its segment (0 expired lease, 1 due), time in microseconds
since the epoch and ``seq``; ``"ps1."`` with its ``due_at`` and ``seq``. As
keys, not offsets: rows taken or added between pages shift nothing, and a row
whose due time moved (a retry, a lease) is seen where it now sorts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from upnext.broker.cursor import key_cursor, parse_key_cursor
from upnext.broker.optional import WaitingJob, WaitingPage
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    import asyncpg

    from upnext_postgres.schema import Names

__all__ = ["waiting_page", "waiting_query"]

_READY, _SCHEDULED = "pr1.", "ps1."
_WHAT = "waiting-jobs"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

Key = tuple[int, datetime, int]  # segment, time, seq


def _time(micros: int | float | str, cursor: str) -> datetime:
    try:
        return _EPOCH + int(micros) * _MICRO
    except OverflowError:
        raise ConfigurationError(f"malformed {_WHAT} cursor: {cursor[:80]!r}") from None


def _key(cursor: str | None, *, scheduled: bool) -> Key | None:
    """The key a cursor names; ConfigurationError for one this backend did not make."""
    if cursor is None:
        return None
    if scheduled:
        micros, seq = parse_key_cursor(cursor, _SCHEDULED, (int, int), _WHAT)
        return 1, _time(micros, cursor), int(seq)
    segment, micros, seq = parse_key_cursor(cursor, _READY, (int, int, int), _WHAT)
    if segment not in (0, 1):
        raise ConfigurationError(f"malformed {_WHAT} cursor: {cursor[:80]!r}")
    return int(segment), _time(micros, cursor), int(seq)


def waiting_query(
    n: Names, *, scheduled: bool, cursor: str | None
) -> tuple[str, tuple[object, ...]]:
    """The statement of one page and its arguments after $1 (queue) and $2 (limit + 1)."""
    key = _key(cursor, scheduled=scheduled)
    args: tuple[object, ...] = () if key is None else key[1:]

    def waiting(seg: int, column: str, where: str, after: bool) -> str:
        keyset = f"AND ({column}, seq) > ($3, $4)" if after else ""
        return (
            f"SELECT {seg} AS seg, {column} AS t, seq, id, body, priority FROM {n.jobs} "
            f"WHERE queue = $1 AND {where} {keyset} ORDER BY {column}, seq LIMIT $2"
        )

    if scheduled:
        return waiting(1, "due_at", "lease_until IS NULL AND due_at > now()", bool(key)), args
    due = "lease_until IS NULL AND due_at <= now()"
    if key is not None and key[0] == 1:
        return waiting(1, "due_at", due, True), args
    expired = waiting(
        0, "lease_until", "lease_until IS NOT NULL AND lease_until < now()", bool(key)
    )
    union = f"({expired}) UNION ALL ({waiting(1, 'due_at', due, False)})"
    return f"{union} ORDER BY seg, t, seq LIMIT $2", args


def _cursor(row: asyncpg.Record, *, scheduled: bool) -> str:
    micros = (row["t"] - _EPOCH) // _MICRO
    if scheduled:
        return key_cursor(_SCHEDULED, [micros, row["seq"]])
    return key_cursor(_READY, [row["seg"], micros, row["seq"]])


def waiting_page(
    rows: list[asyncpg.Record], queue: str, *, scheduled: bool, limit: int
) -> WaitingPage:
    """The page of up to `limit` + 1 rows of `waiting_query` (the extra says more follow)."""
    jobs = [
        WaitingJob(
            row["id"],
            queue,
            row["body"],
            row["priority"],
            row["t"].timestamp() if scheduled else None,
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return WaitingPage(jobs, _cursor(rows[limit - 1], scheduled=scheduled) if more else None)
