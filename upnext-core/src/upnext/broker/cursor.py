"""The page cursors every bundled backend uses.

Dead-letter pages run newest first by ``(failed_at, id)``; a cursor names the
last record of a page as ``"<failed_at>/<id>"`` (`repr` of the float, so it
round-trips exactly). State scans run in key order; a cursor names the last
key of a page, as ``"k:"`` and the key's UTF-8 in URL-safe base64. A backend
may use any opaque string instead; these helpers are for those that page by
the same key.
"""

from __future__ import annotations

import base64
import binascii

from upnext.broker.protocol import DeadLetterRecord
from upnext.errors import ConfigurationError

__all__ = ["dlq_cursor", "parse_dlq_cursor", "parse_state_cursor", "state_cursor"]


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
