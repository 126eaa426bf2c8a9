"""The server's view of one broker and result store: DLQ, job results, queue counts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pydantic import ValidationError

from upnext._serializer import ResultRecord
from upnext._urls import redact_url, scheme_of
from upnext._worker import Worker
from upnext.broker.protocol import QueueAdmin
from upnext.errors import DeadLetterNotFound, UnsupportedOperation, UpNextError
from upnext.server._models import BulkReplayResult, Health, JobInfo, QueueInfo, Replayed

__all__ = ["Backend"]


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Backend:
    """A never-consuming Worker used as a client: its `dlq`, its store, its broker's stats."""

    def __init__(
        self, broker_url: str, results_url: str | None, queues: Sequence[str] = ()
    ) -> None:
        self.worker = Worker("upnext-server", broker_url, results=results_url, load_plugins=False)
        self.worker.factories.build()  # fail now (not per request) on a store-less broker
        self.dlq = self.worker.dlq
        self.scheme = scheme_of(broker_url)
        self.queues = list(dict.fromkeys(queues))
        self._urls = [u for u in (broker_url, results_url) if u]

    def scrub(self, text: str) -> str:
        """`text` with the configured URLs and their passwords hidden (a second guard)."""
        for url in self._urls:
            text = text.replace(url, redact_url(url))
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                text = text.replace(password, "***")
        return text

    async def health(self) -> Health:
        """Connect (once) and say what the broker offers."""
        client = await self.worker.client()
        return Health(
            status="ok", scheme=self.scheme, dlq_access=client.broker.capabilities.dlq_access
        )

    async def known_queues(self) -> list[str]:
        """Queues given to the server, then those the broker lists."""
        client = await self.worker.client()
        listed = await client.broker.queues() if isinstance(client.broker, QueueAdmin) else []
        return list(dict.fromkeys([*self.queues, *sorted(listed)]))

    async def queue_stats(self) -> list[QueueInfo]:
        """Counts of every known queue (all null on a broker without QueueAdmin)."""
        client = await self.worker.client()
        names = await self.known_queues()
        if not isinstance(client.broker, QueueAdmin):
            return [
                QueueInfo(name=n, ready=None, scheduled=None, in_flight=None, dead=None)
                for n in names
            ]
        stats = await asyncio.gather(*(client.broker.stats(n) for n in names))
        return [
            QueueInfo(
                name=n, ready=s.ready, scheduled=s.scheduled, in_flight=s.in_flight, dead=s.dead
            )
            for n, s in zip(names, stats, strict=True)
        ]

    async def job(self, job_id: str, queue: str | None) -> JobInfo:
        """The stored final result of `job_id`, looked up in `queue` or every known queue."""
        store = (await self.worker.client()).store
        candidates = [queue] if queue else await self.known_queues()
        for name in candidates:
            data = await store.get_result(job_id, queue=name, wait=0.0)
            if data is None:
                continue
            try:
                record = ResultRecord.model_validate_json(data)
            except ValidationError:
                continue
            return JobInfo(
                job_id=job_id,
                status=record.s,
                queue=name,
                function=record.fn,
                result=record.v,
                error=record.e,
                attempts=record.at,
                started_at=_ts(record.st),
                completed_at=_ts(record.ct),
            )
        return JobInfo(job_id=job_id, status="unknown", queue=queue)

    async def replay_matching(
        self, queue: str | None, function: str | None, limit: int
    ) -> BulkReplayResult:
        """Replay up to `limit` entries matching the filter; skip (and say why) the rest."""
        page = await self.dlq.list(limit=limit, queue=queue, function=function)
        replayed: list[Replayed] = []
        skipped: dict[str, str] = {}
        for entry in page.items:
            try:
                replayed.append(Replayed(id=entry.id, job_id=await self.dlq.replay(entry.id)))
            except DeadLetterNotFound:
                skipped[entry.id] = "gone (replayed or deleted meanwhile)"
            except UnsupportedOperation as exc:
                skipped[entry.id] = self.scrub(str(exc))
            except UpNextError as exc:
                if not replayed and not skipped:
                    raise  # nothing done yet: report the failure as the answer
                skipped[entry.id] = self.scrub(str(exc))
        return BulkReplayResult(replayed=replayed, skipped=skipped)

    async def aclose(self) -> None:
        """Close the connections of the running event loop."""
        await self.worker.aclose()
