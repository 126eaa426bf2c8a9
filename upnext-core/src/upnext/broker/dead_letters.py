"""`DeadLetterQuery`: what core asks a dead-letter store for when it pages.

Core owns paging, cursors and limits (`upnext.broker.cursor.dead_letter_page`);
a backend answers one query at a time with `DeadLetterAdmin.dlq_records`. A
store with an index translates the query (``WHERE (failed_at, id) < before
ORDER BY failed_at DESC, id DESC LIMIT n``); a store read front to back
answers with `DeadLetterQuery.select` over every record it read.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from upnext.broker.protocol import DeadLetterRecord

__all__ = ["DeadLetterQuery", "function_matches"]


def function_matches(name: str, wanted: str) -> bool:
    """True if `wanted` is the dotted `name` or a dotted suffix of it (``b.c`` of ``a.b.c``)."""
    return name == wanted or name.endswith("." + wanted)


def _newest_key(record: DeadLetterRecord) -> tuple[float, str]:
    return record.failed_at, record.id


@dataclass(frozen=True, slots=True)
class DeadLetterQuery:
    """The `limit` newest records older than `before` that pass the filters given.

    `before` is the ``(failed_at, id)`` key of the last record core has
    seen; only records strictly older by that key match (every record, when
    None). Ids compare as Python compares strings (by code point).

    Filters (None: any): `queue` and `job_id` match exactly; `function`
    matches the whole dotted name or a dotted suffix of it, so ``charge_card``
    and ``billing.charge_card`` both match ``app.billing.charge_card``, and
    ``card`` does not (`function_matches`). In SQL::

        function = $f OR right(function, length($f) + 1) = '.' || $f
    """

    limit: int
    before: tuple[float, str] | None = None
    queue: str | None = None
    function: str | None = None
    job_id: str | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        """True if `record` passes the filters and lies strictly before `before`."""
        return (
            (self.queue is None or record.queue == self.queue)
            and (self.job_id is None or record.job_id == self.job_id)
            and (self.function is None or function_matches(record.function, self.function))
            and (self.before is None or _newest_key(record) < self.before)
        )

    def select(self, records: Iterable[DeadLetterRecord]) -> list[DeadLetterRecord]:
        """The answer to this query out of `records` (any order), newest first."""
        return heapq.nlargest(self.limit, filter(self.matches, records), key=_newest_key)
