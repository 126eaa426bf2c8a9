"""The server's view of one broker and result store: DLQ, job results, queue counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from pydantic import ValidationError

from upnext._dlq import DeadLetterEntry, EntryPage
from upnext._urls import scheme_of
from upnext._worker import Worker
from upnext.broker.optional import ManagementStats, QueueStatsReader
from upnext.broker.protocol import Broker, QueueAdmin, QueueStats
from upnext.broker.redact import redact
from upnext.errors import (
    ConfigurationError,
    DeadLetterNotFound,
    UnsupportedOperation,
    UpNextError,
)
from upnext.jobs import find_job, list_jobs
from upnext.server._models import (
    BulkReplayResult,
    Health,
    JobInfo,
    JobPage,
    QueueInfo,
    Replayed,
    RunningJobInfo,
    WorkerEntry,
    WorkerList,
)
from upnext.workers import WorkerInfo, read_registry

__all__ = ["Backend"]


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _entry(info: WorkerInfo, now: float) -> WorkerEntry:
    """`info` for the API: datetimes, and the age of its last tick (never below 0)."""
    running = [
        RunningJobInfo(
            job_id=r.job_id,
            function=r.function,
            attempt=r.attempt,
            started_at=_ts(r.started_at),
            progress=r.progress,
            queue=r.queue,
        )
        for r in info.running
    ]
    return WorkerEntry(
        worker_id=info.worker_id,
        name=info.name,
        host=info.host,
        pid=info.pid,
        queues=info.queues,
        concurrency=info.concurrency,
        started_at=datetime.fromtimestamp(info.started_at, UTC),
        beat_at=datetime.fromtimestamp(info.beat_at, UTC),
        # Clocks of other hosts may run ahead of this one's: a beat is never in the future.
        heartbeat_age=round(max(0.0, now - info.beat_at), 3),
        running_count=info.running_count,
        running=running,
        finished=info.finished,
    )


def _management(broker: Broker, url: str, scheme: str) -> QueueStatsReader:
    """The reader of `broker`'s management API at `url`; ConfigurationError if it has none."""
    if not isinstance(broker, ManagementStats):
        raise ConfigurationError(
            f"--management-url: the {scheme}:// backend offers no management API to read"
            " queues from"
        )
    return broker.management_stats(url)


class Backend:
    """A never-consuming Worker used as a client: its `dlq`, its store, its broker's stats.

    On a scan-type DLQ (RabbitMQ) the server makes one broker-admin call at a
    time. There a call reads the broker's queue catalog by consuming it, and
    two reads at once split its names between them: an entry read running
    beside the dashboard's live queue refresh saw no queues and answered 404
    for an entry that exists. Scans are one at a time per process anyway.
    """

    def __init__(
        self,
        broker_url: str,
        results_url: str | None,
        queues: Sequence[str] = (),
        management_url: str | None = None,
    ) -> None:
        self.worker = Worker("upnext-server", broker_url, results=results_url, load_plugins=False)
        # Fail now (not per request) on a store-less broker or a bad management URL.
        built = self.worker.factories.build()
        self.dlq = self.worker.dlq
        self.scheme = scheme_of(broker_url)
        self.management = (
            _management(built.broker, management_url, self.scheme) if management_url else None
        )
        self.queues = list(dict.fromkeys(queues))
        self._urls = [u for u in (broker_url, results_url, management_url) if u]
        self._serial = asyncio.Lock()
        self._stats_reads: dict[asyncio.AbstractEventLoop, asyncio.Task[list[QueueInfo]]] = {}

    def scrub(self, text: str) -> str:
        """`text` with the configured URLs' passwords, and any URL's, hidden (a second guard)."""
        return redact(text, *self._urls)

    @asynccontextmanager
    async def _admin(self) -> AsyncIterator[None]:
        """A turn for one broker-admin call: exclusive on a scan-type DLQ, free otherwise.

        A value the broker's driver refuses (RabbitMQ's client takes queue names
        of ``[a-zA-Z0-9-_.:@#,/+ ]`` only) came from the request: bad input,
        ConfigurationError (422), not a server error.
        """
        client = await self.worker.client()
        try:
            if client.broker.capabilities.dlq_access != "scan":
                yield
                return
            async with self._serial:
                yield
        except ValidationError:
            raise  # data the server made or read: a bug, not the request's fault
        except ValueError as exc:
            raise ConfigurationError(f"the broker refused a value of the request: {exc}") from None

    async def health(self) -> Health:
        """Connect (once) and say what the broker offers."""
        client = await self.worker.client()
        return Health(
            status="ok", scheme=self.scheme, dlq_access=client.broker.capabilities.dlq_access
        )

    async def known_queues(self) -> list[str]:
        """Queues given to the server, then those the broker (or management API) lists."""
        if self.management is not None:
            listed = list(await self.management.all_stats())
            return list(dict.fromkeys([*self.queues, *listed]))
        async with self._admin():
            return await self._listed_queues()

    async def _listed_queues(self) -> list[str]:
        client = await self.worker.client()
        listed = await client.broker.queues() if isinstance(client.broker, QueueAdmin) else []
        return list(dict.fromkeys([*self.queues, *sorted(listed)]))

    async def queue_stats(self) -> list[QueueInfo]:
        """Counts of every known queue (null where the broker can't tell).

        Callers that come while a read is under way (the dashboard's refresh,
        the history sampler, another browser) share its answer instead of
        queueing behind it: on RabbitMQ without a management API a read asks
        the broker about every catalogued queue, a few milliseconds each.
        """
        loop = asyncio.get_running_loop()
        read = self._stats_reads.get(loop)
        if read is None:
            read = self._stats_reads[loop] = loop.create_task(self._read_stats())
            read.add_done_callback(lambda done: self._stats_reads.pop(loop, None))
        # A caller that gives up (a closed request) leaves the read to the others.
        return await asyncio.shield(read)

    async def _read_stats(self) -> list[QueueInfo]:
        if self.management is not None:
            return await self._managed_stats()
        client = await self.worker.client()
        async with self._admin():
            names = await self._listed_queues()
            if not isinstance(client.broker, QueueAdmin):
                return [
                    QueueInfo(name=n, ready=None, scheduled=None, in_flight=None, dead=None)
                    for n in names
                ]
            broker = client.broker
            stats = await asyncio.gather(*(broker.stats(n) for n in names))
        return [
            QueueInfo(
                name=n, ready=s.ready, scheduled=s.scheduled, in_flight=s.in_flight, dead=s.dead
            )
            for n, s in zip(names, stats, strict=True)
        ]

    async def _managed_stats(self) -> list[QueueInfo]:
        """Every queue the management API lists, and those given, with its counts."""
        assert self.management is not None
        counts = await self.management.all_stats()
        names = list(dict.fromkeys([*self.queues, *counts]))
        unknown = QueueStats(ready=None, scheduled=None, in_flight=None, dead=None)
        return [
            QueueInfo(
                name=n, ready=s.ready, scheduled=s.scheduled, in_flight=s.in_flight, dead=s.dead
            )
            for n, s in ((n, counts.get(n, unknown)) for n in names)
        ]

    # -- the dead-letter queue, one admin call at a time where that matters ----

    async def dlq_list(
        self,
        limit: int,
        cursor: str | None,
        queue: str | None,
        function: str | None,
        job_id: str | None = None,
    ) -> EntryPage:
        """A page of entries, newest first."""
        async with self._admin():
            return await self.worker.dlq.list(
                limit=limit, cursor=cursor, queue=queue, function=function, job_id=job_id
            )

    async def dlq_get(self, entry_id: str) -> DeadLetterEntry:
        """One entry; DeadLetterNotFound if it is gone."""
        async with self._admin():
            return await self.worker.dlq.get(entry_id)

    async def dlq_replay(self, entry_id: str) -> str:
        """Replay one entry as a new job; the new job id."""
        async with self._admin():
            return await self.worker.dlq.replay(entry_id)

    async def dlq_delete(self, entry_id: str) -> None:
        """Remove one entry; DeadLetterNotFound if it is gone."""
        async with self._admin():
            await self.worker.dlq.delete(entry_id)

    async def dlq_purge(self, queue: str | None) -> int:
        """Remove every entry (of `queue`); how many."""
        async with self._admin():
            return await self.worker.dlq.purge(queue)

    async def job(self, job_id: str, queue: str | None) -> JobInfo:
        """Everything known of `job_id` (`upnext.jobs.find_job`), in `queue` or every known one."""
        return await find_job(self.worker, job_id, queue=queue, queues=self.queues)

    async def jobs(
        self,
        status: str | None,
        queue: str | None,
        task: str | None,
        limit: int,
        cursor: str | None,
    ) -> JobPage:
        """A page of jobs of `status` (`upnext.jobs.list_jobs`); one broker-admin call's turn."""
        async with self._admin():
            return await list_jobs(
                self.worker,
                status=status,
                queue=queue,
                task=task,
                limit=limit,
                cursor=cursor,
                queues=self.queues,
            )

    async def _registry(self) -> list[WorkerInfo]:
        """Every live worker; ConfigurationError when neither broker nor store keeps state."""
        client = await self.worker.client()
        return await read_registry(client.require_state("the worker registry"))

    async def workers(self) -> WorkerList:
        """Every live worker with its running jobs; "unavailable" where no state is kept."""
        try:
            infos = await self._registry()
        except ConfigurationError as exc:
            return WorkerList(workers=[], registry="unavailable", reason=self.scrub(str(exc)))
        now = time.time()
        return WorkerList(workers=[_entry(i, now) for i in infos], registry="available")

    async def replay_matching(
        self, queue: str | None, function: str | None, limit: int
    ) -> BulkReplayResult:
        """Replay up to `limit` entries matching the filter; skip (and say why) the rest."""
        page = await self.dlq_list(limit, None, queue, function)
        replayed: list[Replayed] = []
        skipped: dict[str, str] = {}
        for entry in page.items:
            try:
                replayed.append(Replayed(id=entry.id, job_id=await self.dlq_replay(entry.id)))
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
        read = self._stats_reads.pop(asyncio.get_running_loop(), None)
        if read is not None:
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
        try:
            if self.management is not None:
                await self.management.aclose()
        finally:
            await self.worker.aclose()
