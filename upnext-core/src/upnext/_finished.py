"""`FinishedCounts`: the jobs a worker finished per queue, which its tick publishes."""

from __future__ import annotations

from upnext.workers import QueueCounts

__all__ = ["FinishedCounts"]

_FINAL = frozenset({"complete", "failed", "cancelled"})


class FinishedCounts:
    """Per queue, the jobs settled for good and the failed among them (plain ints: cheap).

    The consumer calls `count` once a settlement is durable; the worker tick
    reads `snapshot` once a tick into the registry entry.
    """

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}

    def count(self, queue: str, status: str) -> None:
        """Count one durable settlement of a job of `queue` that left it with `status`."""
        if status not in _FINAL:
            return  # scheduled again (a retry) or released: not finished
        counts = self._counts.get(queue)
        if counts is None:
            counts = self._counts[queue] = [0, 0]
        counts[0] += 1
        if status == "failed":
            counts[1] += 1

    def snapshot(self) -> dict[str, QueueCounts]:
        """The counts so far, per queue."""
        return {
            queue: QueueCounts(processed=processed, failed=failed)
            for queue, (processed, failed) in self._counts.items()
        }
