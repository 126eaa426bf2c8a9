"""`upnext.jobs.list_jobs`'s work: one page from each source, and the cursors that go on.

A cursor is ``"j1."`` (the format's version) and URL-safe base64 of a JSON
object: ``s`` the status it lists (``""`` for none), and where to go on:
``k`` the ``[time, job_id]`` key of the last job shown by registry or history
(``p`` the phase, ``"a"`` active or ``"h"`` history, when mixed); ``q``,
``c``, ``o`` the queue, the broker's own cursor of the page and the offset
in it for waiting jobs; ``d`` the dead-letter cursor. A filter (`task`)
applied while paging a broker or the DLQ reads at most `SCAN_BUDGET` jobs
per page asked for: past that, the page comes back short with a cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from upnext._dlq import DeadLetterEntry
from upnext._history import FinishedJob, read_history
from upnext._jobmodels import JobPage, JobSummary
from upnext._logsafe import scrub
from upnext._serializer import UndecodableBody, decode_body
from upnext.broker.cursor import dead_letter_page, dlq_cursor
from upnext.broker.optional import JobBrowser, WaitingJob
from upnext.broker.protocol import DeadLetterAdmin, DeadLetterRecord, QueueAdmin
from upnext.errors import ConfigurationError, UnsupportedOperation
from upnext.workers import WorkerInfo, read_registry

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = ["SCAN_BUDGET", "Listing", "active_jobs", "summary_of_finished", "ts"]

SCAN_BUDGET: Final = 2000
_PAGE: Final = 100  # jobs asked of a broker or the DLQ per call while a filter applies
_VERSION: Final = "j1."
_FINISHED: Final = ("complete", "failed", "cancelled")
_Key = tuple[float, str]


def ts(value: float | None) -> datetime | None:
    """Epoch seconds as a UTC datetime (None stays None; 0 means unknown)."""
    return datetime.fromtimestamp(value, UTC) if value else None


def encode_cursor(fields: dict[str, Any]) -> str:
    """An opaque, URL-safe, versioned cursor of `fields`."""
    data = json.dumps(fields, separators=(",", ":")).encode()
    return _VERSION + base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(cursor: str, status: str) -> dict[str, Any]:
    """The fields of a cursor made for a listing of `status`; ConfigurationError otherwise."""
    shown = cursor if len(cursor) <= 80 else cursor[:77] + "..."
    try:
        if not cursor.startswith(_VERSION):
            raise ValueError(cursor)
        text = cursor[len(_VERSION) :]
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        fields = json.loads(data)
        if not isinstance(fields, dict) or not isinstance(fields.get("s"), str):
            raise ValueError(cursor)
    except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise ConfigurationError(f"malformed jobs cursor: {shown!r}") from None
    if fields["s"] != status:
        raise ConfigurationError(
            f"this cursor continues a listing of status {fields['s'] or '(any)'!r},"
            f" not {status or '(any)'!r}"
        )
    return fields


def _key(fields: dict[str, Any]) -> _Key | None:
    """The ``k`` key of a cursor, checked; None where it has none."""
    key = fields.get("k")
    if key is None:
        return None
    match key:
        case [int() | float() as at, str() as job_id] if not isinstance(at, bool):
            return float(at), job_id
    raise ConfigurationError("malformed jobs cursor: a bad key")


def summary_of_finished(job: FinishedJob) -> JobSummary:
    """A history entry as a listed job."""
    return JobSummary(
        job_id=job.job_id,
        status=job.status,
        queue=job.queue,
        function=job.function,
        attempt=job.attempt,
        worker_id=job.worker_id,
        enqueued_at=ts(job.enqueued_at),
        due_at=None,
        started_at=ts(job.started_at),
        finished_at=ts(job.finished_at),
        duration_ms=job.duration_ms,
        error=job.error,
        parent_id=job.parent_id,
        dlq_entry_id=job.dlq_entry_id,
    )


def active_jobs(infos: Iterable[WorkerInfo]) -> list[tuple[_Key, JobSummary]]:
    """Every job the live workers say they run, with its sort key (start time, job id)."""
    found = []
    for info in infos:
        for run in info.running:
            summary = JobSummary(
                job_id=run.job_id,
                status="active",
                queue=run.queue,
                function=run.function,
                attempt=run.attempt,
                worker_id=info.worker_id,
                enqueued_at=None,
                due_at=None,
                started_at=ts(run.started_at),
                finished_at=None,
                duration_ms=None,
                error=None,
                parent_id=None,
                dlq_entry_id=None,
            )
            found.append(((run.started_at or info.beat_at, run.job_id), summary))
    return found


def _newest_after(
    keyed: Iterable[tuple[_Key, JobSummary]], after: _Key | None, limit: int
) -> tuple[list[JobSummary], _Key | None, bool]:
    """Up to `limit` jobs newest first, strictly older than `after`; last key, and more?"""
    ordered = sorted(
        (item for item in keyed if after is None or item[0] < after),
        key=lambda item: item[0],
        reverse=True,
    )
    page = ordered[:limit]
    return [s for _, s in page], page[-1][0] if page else None, len(ordered) > limit


class Listing:
    """One request: its filters, and the page each status's source answers."""

    def __init__(self, worker: Worker, *, queue: str | None, task: str | None, limit: int) -> None:
        self.worker = worker
        self.queue = queue
        self.task = task
        self.limit = limit

    def _wanted(self, queue: str | None, function: str) -> bool:
        return (self.queue is None or queue == self.queue) and (
            self.task is None or self.task in function
        )

    async def page(self, status: str | None, cursor: str | None, queues: Sequence[str]) -> JobPage:
        """The page of `status` (None: active, then the history) after `cursor`."""
        fields = decode_cursor(cursor, status or "") if cursor is not None else {}
        if status in ("queued", "scheduled"):
            return await self._waiting(status == "scheduled", fields, queues)
        if status == "dead":
            return await self._dead(fields)
        client = await self.worker.client()
        state = client.require_state("the jobs listing")
        active: list[tuple[_Key, JobSummary]] = []
        finished: list[tuple[_Key, JobSummary]] = []
        if status in (None, "active"):
            running = active_jobs(await read_registry(state))
            active = [item for item in running if self._wanted(item[1].queue, item[1].function)]
        if status != "active":
            finished = self._finished(await read_history(state), status)
        if status == "active":
            return self._keyed(active, fields, status, "registry", exact=True)
        if status is not None:
            return self._keyed(finished, fields, status, "history", exact=False)
        return self._mixed(active, finished, fields)

    def _finished(
        self, jobs: list[FinishedJob], status: str | None
    ) -> list[tuple[_Key, JobSummary]]:
        """History entries of `status` (any final one if None) that pass the filters, once each."""
        newest: dict[str, FinishedJob] = {}
        for job in jobs:
            if (status is None or job.status == status) and self._wanted(job.queue, job.function):
                seen = newest.get(job.job_id)
                if seen is None or seen.finished_at < job.finished_at:
                    newest[job.job_id] = job
        return [((j.finished_at, j.job_id), summary_of_finished(j)) for j in newest.values()]

    def _keyed(
        self,
        keyed: list[tuple[_Key, JobSummary]],
        fields: dict[str, Any],
        status: str,
        source: str,
        *,
        exact: bool,
    ) -> JobPage:
        items, last, more = _newest_after(keyed, _key(fields), self.limit)
        cursor = encode_cursor({"s": status, "k": list(last)}) if more and last else None
        return JobPage(items=items, next_cursor=cursor, source=source, exact=exact)

    def _mixed(
        self,
        active: list[tuple[_Key, JobSummary]],
        finished: list[tuple[_Key, JobSummary]],
        fields: dict[str, Any],
    ) -> JobPage:
        """Active jobs newest first, then finished ones; a job finished meanwhile only once."""
        done = {summary.job_id for _, summary in finished}
        active = [item for item in active if item[1].job_id not in done]
        phase, after = fields.get("p", "a"), _key(fields)
        if phase not in ("a", "h"):
            raise ConfigurationError("malformed jobs cursor: a bad phase")
        items: list[JobSummary] = []
        if phase == "a":
            items, last, more = _newest_after(active, after, self.limit)
            if more and last:
                return self._mixed_page(items, {"s": "", "p": "a", "k": list(last)})
            after = None
        rest, last, more = _newest_after(finished, after, self.limit - len(items))
        items += rest
        cursor = {"s": "", "p": "h", "k": list(last)} if more and last else None
        if cursor is None and not rest and more:  # the page filled up with active jobs
            cursor = {"s": "", "p": "h"}
        return self._mixed_page(items, cursor)

    @staticmethod
    def _mixed_page(items: list[JobSummary], cursor: dict[str, Any] | None) -> JobPage:
        next_cursor = encode_cursor(cursor) if cursor else None
        return JobPage(items=items, next_cursor=next_cursor, source="mixed", exact=False)

    # -- waiting jobs, from the broker ------------------------------------------

    async def _browser(self) -> JobBrowser:
        client = await self.worker.client()
        if not isinstance(client.broker, JobBrowser):
            raise ConfigurationError(
                f"the {client.name} broker cannot list waiting jobs: its queues show counts"
                " only (GET /api/v1/queues)"
            )
        return client.broker

    async def _queues(self, given: Sequence[str]) -> list[str]:
        if self.queue is not None:
            return [self.queue]
        client = await self.worker.client()
        listed = await client.broker.queues() if isinstance(client.broker, QueueAdmin) else []
        return sorted({*given, *listed})

    def _waiting_summary(self, job: WaitingJob, scheduled: bool) -> JobSummary | None:
        """`job` as listed, or None if the filters leave it out."""
        try:
            body = decode_body(job.body, self.worker.max_payload)
        except UndecodableBody:
            body = None
        function = body.fn if body is not None else ""
        if not self._wanted(job.queue, function):
            return None
        last = body.history[-1] if body is not None and body.history else None
        return JobSummary(
            job_id=job.id,
            status="scheduled" if scheduled else "queued",
            queue=job.queue,
            function=function,
            attempt=body.attempts + 1 if body is not None else None,
            worker_id=None,
            enqueued_at=ts(body.enqueued_at) if body is not None else None,
            due_at=ts(job.due_at),
            started_at=None,
            finished_at=None,
            duration_ms=None,
            error=scrub(last.error) if last is not None and last.error else None,
            parent_id=body.parent_id if body is not None else None,
            dlq_entry_id=None,
        )

    async def _waiting(
        self, scheduled: bool, fields: dict[str, Any], given: Sequence[str]
    ) -> JobPage:
        """Waiting jobs queue by queue (in name order), each in the order it would run."""
        browser = await self._browser()
        status = "scheduled" if scheduled else "queued"
        start, their, offset = fields.get("q"), fields.get("c"), fields.get("o", 0)
        if not (start is None or isinstance(start, str)) or not isinstance(offset, int):
            raise ConfigurationError("malformed jobs cursor: a bad position")
        if not (their is None or isinstance(their, str)):
            raise ConfigurationError("malformed jobs cursor: a bad position")
        names = [n for n in await self._queues(given) if start is None or n >= start]
        items: list[JobSummary] = []
        scanned = 0
        size = self.limit if self.task is None else _PAGE
        for number, name in enumerate(names):
            broker_cursor, skip = (their, offset) if name == start else (None, 0)
            while True:
                page = await browser.waiting_jobs(
                    name, scheduled=scheduled, limit=size, cursor=broker_cursor
                )
                for index in range(skip, len(page.jobs)):
                    scanned += 1
                    summary = self._waiting_summary(page.jobs[index], scheduled)
                    if summary is not None:
                        items.append(summary)
                    if len(items) < self.limit and scanned < SCAN_BUDGET:
                        continue
                    more = index + 1 < len(page.jobs) or page.cursor or number + 1 < len(names)
                    here = {"s": status, "q": name, "c": broker_cursor, "o": index + 1}
                    cursor = encode_cursor(here) if more else None
                    return JobPage(items=items, next_cursor=cursor, source="broker", exact=True)
                if page.cursor is None:
                    break
                broker_cursor, skip = page.cursor, 0
        return JobPage(items=items, next_cursor=None, source="broker", exact=True)

    # -- dead jobs, from the DLQ ----------------------------------------------

    async def _dead(self, fields: dict[str, Any]) -> JobPage:
        """Dead-letter entries newest first, as jobs."""
        client = await self.worker.client()
        admin = client.broker
        if not isinstance(admin, DeadLetterAdmin) or admin.capabilities.dlq_access is None:
            raise UnsupportedOperation(f"{client.name} offers no dead-letter access")
        their = fields.get("d")
        if not (their is None or isinstance(their, str)):
            raise ConfigurationError("malformed jobs cursor: a bad position")
        items: list[JobSummary] = []
        scanned = 0
        size = self.limit if self.task is None else _PAGE
        while True:
            page = await dead_letter_page(admin, queue=self.queue, limit=size, cursor=their)
            for index, record in enumerate(page.records):
                scanned += 1
                if self.task is None or self.task in record.function:
                    items.append(_dead_summary(record))
                if len(items) < self.limit and scanned < SCAN_BUDGET:
                    continue
                more = index + 1 < len(page.records) or page.next_cursor is not None
                cursor = encode_cursor({"s": "dead", "d": dlq_cursor(record)}) if more else None
                return JobPage(items=items, next_cursor=cursor, source="dlq", exact=True)
            if page.next_cursor is None:
                return JobPage(items=items, next_cursor=None, source="dlq", exact=True)
            their = page.next_cursor


def _dead_summary(record: DeadLetterRecord) -> JobSummary:
    entry = DeadLetterEntry.from_record(record)
    last = entry.attempts[-1] if entry.attempts else None
    error = str(entry.error).strip().splitlines()[0] if entry.error else entry.reason
    return JobSummary(
        job_id=entry.job_id,
        status="dead",
        queue=entry.queue,
        function=entry.function,
        attempt=last.number if last is not None else None,
        worker_id=last.worker if last is not None else None,
        enqueued_at=None,
        due_at=None,
        started_at=ts(last.started) if last is not None else None,
        finished_at=entry.failed_at,
        duration_ms=(
            round((last.finished - last.started) * 1000, 3)
            if last is not None and last.started is not None and last.finished is not None
            else None
        ),
        error=scrub(error[:300]),
        parent_id=entry.parent_id,
        dlq_entry_id=entry.id,
    )
