"""Page cursors, and the dead-letter page core builds over a backend's `dlq_records`.

Dead-letter pages run newest first by ``(failed_at, id)``. Core makes every
dead-letter cursor, whatever the backend: ``"d1."`` (the format's version)
and the last record's key as JSON ``[failed_at, id]`` in URL-safe base64
(JSON floats round-trip exactly). A string that is not such a cursor raises
`ConfigurationError`. State scans run in key order; a state cursor names the
last key of a page, as ``"k:"`` and the key's UTF-8 in URL-safe base64. A
state store may use any opaque string instead; these helpers are for those
that page by key.

`key_cursor` and `parse_key_cursor` are the same envelope for any backend's
own keyset cursor (a `JobBrowser`'s, say): a tag the backend picks, then a
short JSON list of ints, floats and strings, checked against its expected
shape when read back.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence

from upnext.broker.dead_letters import DeadLetterQuery
from upnext.broker.protocol import DeadLetterAdmin, DeadLetterPage, DeadLetterRecord
from upnext.errors import ConfigurationError

__all__ = [
    "dead_letter_page",
    "dlq_cursor",
    "key_cursor",
    "parse_dlq_cursor",
    "parse_key_cursor",
    "parse_state_cursor",
    "state_cursor",
]

_DLQ_VERSION = "d1."


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode(), altchars=b"-_", validate=True)


def _shown(cursor: str) -> str:
    return repr(cursor if len(cursor) <= 80 else cursor[:77] + "...")


def dlq_cursor(last: DeadLetterRecord) -> str:
    """The cursor that continues after `last`."""
    key = json.dumps([last.failed_at, last.id], separators=(",", ":")).encode()
    return _DLQ_VERSION + base64.urlsafe_b64encode(key).decode().rstrip("=")


def parse_dlq_cursor(cursor: str) -> tuple[float, str]:
    """``(failed_at, id)`` of a cursor; ConfigurationError if core did not make it."""
    try:
        if not cursor.startswith(_DLQ_VERSION):
            raise ValueError(cursor)
        failed_at, entry_id = json.loads(_b64decode(cursor[len(_DLQ_VERSION) :]))
        if isinstance(failed_at, bool) or not isinstance(failed_at, int | float):
            raise ValueError(cursor)
        if not math.isfinite(failed_at) or not isinstance(entry_id, str):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise ConfigurationError(f"malformed dead-letter cursor: {_shown(cursor)}") from None
    return float(failed_at), entry_id


async def dead_letter_page(
    admin: DeadLetterAdmin,
    *,
    queue: str | None = None,
    function: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    job_id: str | None = None,
) -> DeadLetterPage:
    """Up to `limit` records newest first, after `cursor`, of `queue`/`function`/`job_id`.

    The filters are `DeadLetterQuery`'s. `next_cursor` is None on the last
    page. Stable under concurrent inserts and deletes as far as
    `admin.dlq_records` keeps its guarantees: following cursors never repeats
    a record and never skips one that existed throughout. ValueError for a
    `limit` below 1; ConfigurationError for a cursor core did not make.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    before = parse_dlq_cursor(cursor) if cursor is not None else None
    # One more than a page: whether it comes back says whether a next page exists.
    query = DeadLetterQuery(limit + 1, before, queue, function, job_id)
    records = await admin.dlq_records(query)
    page = records[:limit]
    return DeadLetterPage(page, dlq_cursor(page[-1]) if len(records) > limit else None)


def state_cursor(last_key: str) -> str:
    """The cursor of a state scan that continues after `last_key`."""
    return "k:" + base64.urlsafe_b64encode(last_key.encode()).decode()


def parse_state_cursor(cursor: str) -> str:
    """The last key a state-scan cursor names; ConfigurationError if it is not one of ours."""
    try:
        if not cursor.startswith("k:"):
            raise ValueError(cursor)
        return base64.b64decode(cursor[2:].encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error):
        raise ConfigurationError(f"malformed state cursor: {cursor!r}") from None


_Key = Sequence[int | float | str]


def key_cursor(tag: str, key: _Key) -> str:
    """A cursor of `tag` naming `key` (JSON in URL-safe base64: floats round-trip exactly)."""
    data = json.dumps(list(key), separators=(",", ":")).encode()
    return tag + base64.urlsafe_b64encode(data).decode().rstrip("=")


def _fits(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    if kind is int:  # within a signed 64-bit integer, as every database column takes
        return isinstance(value, int) and -(2**63) <= value < 2**63
    return isinstance(value, kind)


def parse_key_cursor(
    cursor: str, tag: str, shape: Sequence[type], what: str
) -> list[int | float | str]:
    """The key of a `key_cursor` of `tag` whose items are of the types in `shape`.

    `ConfigurationError` naming `what` (``"waiting-jobs"``) for any other string.
    """
    try:
        if not cursor.startswith(tag):
            raise ValueError(cursor)
        key = json.loads(_b64decode(cursor[len(tag) :]))
        if not isinstance(key, list) or len(key) != len(shape):
            raise ValueError(cursor)
        if not all(_fits(v, kind) for v, kind in zip(key, shape, strict=True)):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise ConfigurationError(f"malformed {what} cursor: {_shown(cursor)}") from None
    return [float(v) if kind is float else v for v, kind in zip(key, shape, strict=True)]
