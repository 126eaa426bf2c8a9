"""The dead-letter page cursor every bundled backend uses.

Pages run newest first by ``(failed_at, id)``; a cursor names the last
record of a page as ``"<failed_at>/<id>"`` (`repr` of the float, so it
round-trips exactly). A backend may use any opaque string instead; these
helpers are for those that page by the same key.
"""

from __future__ import annotations

from upnext.broker.protocol import DeadLetterRecord
from upnext.errors import ConfigurationError

__all__ = ["dlq_cursor", "parse_dlq_cursor"]


def dlq_cursor(last: DeadLetterRecord) -> str:
    """The cursor that continues after `last`."""
    return f"{last.failed_at!r}/{last.id}"


def parse_dlq_cursor(cursor: str) -> tuple[float, str]:
    """``(failed_at, id)`` of a cursor; ConfigurationError if it is not one of ours."""
    failed_at, sep, entry_id = cursor.partition("/")
    try:
        if not sep:
            raise ValueError(cursor)
        return float(failed_at), entry_id
    except ValueError:
        raise ConfigurationError(f"malformed dead-letter cursor: {cursor!r}") from None
