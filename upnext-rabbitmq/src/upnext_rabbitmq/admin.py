"""Dead-letter and queue administration for `RabbitBroker` (a mixin).

AMQP cannot list queues, so upnext keeps a catalog: a durable queue holding
the name of every upnext queue, written the first time a process declares it
and compacted whenever an admin reads it (duplicates dropped, and at most once
a minute the names whose work queue no longer exists). A read holds an
exclusive consumer on it, so concurrent readers (in any process) take turns
instead of each seeing part of the names.
Dead-letter operations scan DLQs under exclusive consumers (see `dlq`);
counts come from ``queue.declare`` replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import AbstractConnection as RawConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity
from upnext.broker import Backoff
from upnext.broker.protocol import DeadLetterQuery, DeadLetterRecord, Envelope, QueueStats
from upnext.errors import Busy, DeadLetterNotFound

from upnext_rabbitmq._errors import map_errors
from upnext_rabbitmq._options import RabbitOptions
from upnext_rabbitmq.dlq import DeadLetterScan
from upnext_rabbitmq.topology import CATALOG_QUEUE, LEVELS, dlq_queue, level_queue, work_queue

__all__ = ["AdminMixin"]

# Seconds between checks of the catalog's names against the server's queues.
PRUNE_EVERY = 60.0
# Seconds a catalog read waits for another reader (here or elsewhere) to finish.
CATALOG_WAIT = 15.0


class _CatalogRead:
    """One read of the catalog under an exclusive consumer with no prefetch limit.

    Holding the only consumer, every ready name is pushed to us; once a
    passive declare on the same channel counts none ready, all of them have
    been delivered (the server writes those deliveries before its reply, and
    the client runs their callbacks first). Counting once before consuming
    would not do: a reader that just closed may still be handing its names
    back. Deliveries after the snapshot stay unacked and return at close.
    """

    def __init__(self) -> None:
        self.copies: dict[str, list[int]] = {}
        self.done = False

    async def snapshot(self, channel: RawChannel) -> dict[str, list[int]]:
        """Every name in the catalog, with the delivery tags of its copies."""
        deadline = time.monotonic() + 2.0
        while True:
            ok = await channel.queue_declare(CATALOG_QUEUE, passive=True)
            await asyncio.sleep(0)  # deliveries framed before the reply: their callbacks
            if not ok.message_count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        self.done = True
        # A snapshot: deliveries still arriving must not change what we act on.
        return {name: list(tags) for name, tags in self.copies.items()}

    async def on_message(self, message: DeliveredMessage) -> None:
        if self.done:
            return
        name = message.body.decode("utf-8", "replace")
        self.copies.setdefault(name, []).append(message.delivery_tag or 0)


class AdminMixin:
    """`DeadLetterAdmin` and `QueueAdmin` on top of the broker's connection."""

    url: str
    options: RabbitOptions
    _declared: set[str]
    _admin_lock: asyncio.Lock
    _pruned_at: float
    _channel_lock: asyncio.Lock

    def _raw_connection(self) -> RawConnection:
        raise NotImplementedError

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        raise NotImplementedError

    def _buffered(self, queue: str) -> int:
        raise NotImplementedError

    async def _drop_buffered(self, queue: str) -> int:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------

    async def _passive_count(self, amqp_queue: str) -> int | None:
        """Ready messages in `amqp_queue`, or None if it does not exist."""
        with map_errors(self.url, f"inspecting {amqp_queue!r}"):
            async with self._channel_lock:
                return await self._passive_count_locked(amqp_queue)

    async def _passive_count_locked(self, amqp_queue: str) -> int | None:
        # Under _channel_lock: a 404 closes the channel from the server side,
        # and aiormq frees its number before it answers; a channel opened by
        # another task in that moment would reuse the number and RabbitMQ
        # would close the whole connection ("second 'channel.open' seen").
        channel = await self._raw_connection().channel(publisher_confirms=False)
        try:
            ok = await channel.queue_declare(amqp_queue, passive=True)
        except ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()
        return ok.message_count or 0

    async def _known_queues(self) -> list[str]:
        names = await self._read_catalog()
        return sorted(names | self._declared)

    async def _read_catalog(self) -> set[str]:
        # Under an exclusive consumer: two readers at once would each get a
        # part of the names (the catalog is a queue), so a second reader, here
        # or in another process, waits for the first: up to CATALOG_WAIT, as a
        # read that prunes checks every name (about a second per 100 names).
        deadline = time.monotonic() + max(self.options.dlq_busy_wait, CATALOG_WAIT)
        backoff = Backoff(first=0.01, cap=0.2)
        with map_errors(self.url, "reading the queue catalog"):
            while True:
                async with self._channel_lock:
                    channel = await self._raw_connection().channel(publisher_confirms=False)
                    read: _CatalogRead | None
                    try:
                        read = await self._consume_catalog(channel)
                    except ChannelAccessRefused:
                        # The server closed the channel; under the lock, so no
                        # other task reuses its number meanwhile.
                        read = None
                try:
                    if read is None:
                        pause = next(backoff)
                        if time.monotonic() + pause > deadline:
                            raise Busy("queue catalog busy: another admin is reading it; try again")
                        await asyncio.sleep(pause)
                        continue
                    copies = await read.snapshot(channel)
                    alive = await self._existing(list(copies))
                    for name, tags in copies.items():
                        for tag in tags if name not in alive else tags[1:]:
                            await channel.basic_ack(tag, wait=False)
                    return alive
                finally:
                    if not channel.is_closed:
                        await channel.close()

    async def _existing(self, names: list[str]) -> set[str]:
        """Which of `names` still have a work queue (checked at most once a minute)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY:
            return set(names)
        self._pruned_at = now
        alive: set[str] = set()
        # One at a time: a missing queue closes its channel, and opening
        # channels in parallel with such closes is where clients trip up.
        for name in names:
            if name in self._declared or await self._passive_count(work_queue(name)) is not None:
                alive.add(name)
        return alive

    async def _consume_catalog(self, channel: RawChannel) -> _CatalogRead:
        """Start an exclusive consumer on the catalog (ACCESS_REFUSED if another holds it)."""
        await channel.queue_declare(CATALOG_QUEUE, durable=True)
        read = _CatalogRead()
        await channel.basic_qos(prefetch_count=0)
        await channel.basic_consume(CATALOG_QUEUE, read.on_message, exclusive=True)
        return read

    @contextlib.asynccontextmanager
    async def _scan(self, queues: Sequence[str]) -> AsyncIterator[DeadLetterScan]:
        # One scan at a time per process; other processes meet the exclusive consumer.
        async with self._admin_lock:
            scan = DeadLetterScan(self.options.amqp_url, queues, self.options.dlq_busy_wait)
            async with scan:
                yield scan

    # -- dead-letter admin -----------------------------------------------------

    async def dlq_records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """The records `query` asks for, out of a full scan of the DLQs it concerns."""
        queues = [query.queue] if query.queue is not None else await self._known_queues()
        with map_errors(self.url, "listing dead letters"):
            async with self._scan(queues) as scan:
                return query.select(entry.record for entry in scan.entries.values())

    async def dlq_get(self, entry_id: str) -> DeadLetterRecord:
        """One record (scanning every DLQ); DeadLetterNotFound if absent."""
        with map_errors(self.url, "reading dead letters"):
            async with self._scan(await self._known_queues()) as scan:
                entry = scan.entries.get(entry_id)
        if entry is None:
            raise DeadLetterNotFound(entry_id)
        return entry.record

    async def dlq_replay(self, entry_id: str, envelope: Envelope) -> None:
        """Enqueue `envelope` (confirmed), then remove the entry, under the scan."""
        # The entry is almost always in its own queue's DLQ: scan that one first.
        if await self._replay_from([envelope.queue], entry_id, envelope):
            return
        others = [q for q in await self._known_queues() if q != envelope.queue]
        if others and await self._replay_from(others, entry_id, envelope):
            return
        raise DeadLetterNotFound(entry_id)

    async def _replay_from(self, queues: list[str], entry_id: str, envelope: Envelope) -> bool:
        with map_errors(self.url, "replaying a dead letter"):
            async with self._scan(queues) as scan:
                if entry_id not in scan.entries:
                    return False
                scan.check_held()  # or the entry would stay after its job is enqueued
                await self.enqueue_many([envelope])
                await scan.remove([entry_id])
                return True

    async def dlq_delete(self, entry_id: str) -> None:
        """Remove an entry (and any duplicate of it); DeadLetterNotFound if absent."""
        with map_errors(self.url, "deleting a dead letter"):
            async with self._scan(await self._known_queues()) as scan:
                removed = await scan.remove([entry_id])
        if not removed:
            raise DeadLetterNotFound(entry_id)

    async def dlq_purge(self, queue: str | None = None) -> int:
        """Remove every entry of `queue`'s DLQ (of every DLQ if None); returns how many."""
        queues = [queue] if queue is not None else await self._known_queues()
        with map_errors(self.url, "purging dead letters"):
            async with self._scan(queues) as scan:
                return await scan.remove(list(scan.entries))

    async def dlq_count(self, queue: str | None = None) -> int:
        """How many distinct entries (of `queue`) the DLQs hold (a scan)."""
        queues = [queue] if queue is not None else await self._known_queues()
        with map_errors(self.url, "counting dead letters"):
            async with self._scan(queues) as scan:
                return len(scan.entries)

    # -- queue admin -----------------------------------------------------------

    async def queues(self) -> list[str]:
        """Every upnext queue that exists on the server (from the catalog)."""
        return await self._known_queues()

    async def stats(self, queue: str) -> QueueStats:
        """Ready, scheduled and dead counts; in-flight is unknown to AMQP.

        `ready` is the server's ready count plus what this process prefetched
        and has not handed out; jobs prefetched by other processes are not in
        it. `scheduled` sums the queue's delay levels (a job moving between two
        levels at that instant is in neither).
        """
        levels = await self._levels(queue)
        ready, dead, *scheduled = await self._counts(
            [work_queue(queue), dlq_queue(queue), *levels], purge=False
        )
        return QueueStats(
            ready=(ready or 0) + self._buffered(queue),
            scheduled=sum(n or 0 for n in scheduled),
            in_flight=None,
            dead=dead or 0,
        )

    async def purge(self, queue: str) -> int:
        """Drop the ready and scheduled jobs of `queue` (and this process's prefetched ones).

        The delay levels are emptied from the longest down, then the work
        queue: a job that leaves a level while this runs lands in one emptied
        after it.
        """
        names = [*await self._levels(queue), work_queue(queue)]
        purged = sum(n or 0 for n in await self._counts(names, purge=True))
        # Purge first, then drop the prefetched: the other order lets the server
        # refill the window from the queue in between. Let in-flight deliveries land.
        await asyncio.sleep(0.02)
        return purged + await self._drop_buffered(queue)

    async def _levels(self, queue: str) -> list[str]:
        """`queue`'s delay level queues, longest first; none if it never had a delay.

        Levels are declared all at once, lowest first: when neither end exists
        the queue has none, and 25 missing-queue errors (each closing a
        channel) are spared.
        """
        names = [level_queue(queue, k) for k in reversed(range(LEVELS))]
        top, bottom = await self._counts([names[0], names[-1]], purge=False)
        return names if top is not None or bottom is not None else []

    async def _counts(self, amqp_queues: Sequence[str], *, purge: bool) -> list[int | None]:
        """Per queue its ready count (None if missing), purging it first if `purge`."""
        doing = "purging" if purge else "inspecting"
        out: list[int | None] = []
        with map_errors(self.url, f"{doing} queues"):
            async with self._channel_lock:
                # Under _channel_lock: see _passive_count_locked. One channel
                # for all, opened again after a missing queue (404) closed it.
                channel: RawChannel | None = None
                try:
                    for name in amqp_queues:
                        if channel is None or channel.is_closed:
                            channel = await self._raw_connection().channel(publisher_confirms=False)
                        try:
                            if purge:
                                count = (await channel.queue_purge(name)).message_count
                            else:
                                count = (
                                    await channel.queue_declare(name, passive=True)
                                ).message_count
                        except ChannelNotFoundEntity:
                            channel = None
                            out.append(None)
                            continue
                        out.append(count or 0)
                finally:
                    if channel is not None and not channel.is_closed:
                        await channel.close()
        return out
