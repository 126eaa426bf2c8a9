"""Dead-letter queues read by scan, one admin at a time.

A dead-letter queue is an AMQP queue, so it can only be read front to back.
A scan opens a private connection (`_wire`: a lean reader, since a scan
receives every message), takes an *exclusive* consumer on each DLQ it reads
(a second admin anywhere gets ACCESS_REFUSED: "busy"), receives every message
without acking, acks the ones it removes, and closes the connection: RabbitMQ
puts the rest back in their original order. Workers keep publishing
dead letters meanwhile; those arrive behind the scanned ones.

Core's records carry their indexed fields as a JSON line ahead of core's
opaque entry in the body, with the entry id as message_id. Messages that reached the DLQ
through the work queue's dead-letter exchange (broker-side dead letters) have
no such headers; they are shown with reason "dead-lettered by broker", the
time from ``x-death``, and the raw job body as data.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity
from upnext.broker.protocol import DeadLetterRecord
from upnext.errors import BrokerError, Busy

from upnext_rabbitmq._publish import Outgoing, persistent
from upnext_rabbitmq._wire import WireConnection
from upnext_rabbitmq._wire_message import WireMessage
from upnext_rabbitmq.topology import dlq_queue

__all__ = ["BROKER_REASON", "DeadLetterScan", "record_message"]

BROKER_REASON = "dead-lettered by broker"
# Core's records: this line, the indexed fields as one JSON line, then core's
# opaque entry. One JSON line decodes far faster than an AMQP header table,
# and a scan decodes every message of the queue.
_MAGIC = b"upnext-dead-letter/1\n"


def record_message(record: DeadLetterRecord) -> Outgoing:
    """The persistent message that stores `record` in its queue's DLQ."""
    meta = json.dumps(
        [record.id, record.job_id, record.queue, record.function, record.reason, record.failed_at]
    ).encode()
    body = b"".join((_MAGIC, meta, b"\n", record.data))
    return Outgoing("", dlq_queue(record.queue), body, persistent(record.id), needs=record.queue)


def _timestamp(value: object) -> float:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else 0.0


def _core_record(body: bytes) -> DeadLetterRecord | None:
    if not body.startswith(_MAGIC):
        return None
    meta, _, data = body[len(_MAGIC) :].partition(b"\n")
    try:
        entry, job_id, queue, function, reason, failed_at = json.loads(meta)
        return DeadLetterRecord(entry, job_id, queue, function, reason, float(failed_at), data)
    except (ValueError, TypeError):
        return None


def decode_all(read: Sequence[tuple[str, WireMessage]]) -> list[DeadLetterRecord]:
    """The records these DLQ messages hold, in order (one JSON parse for all of core's).

    A scan decodes every message of the queue: parsing the index lines of
    10,000 records as one JSON array takes a fraction of 10,000 parses.
    """
    skip = len(_MAGIC)
    metas: list[bytes] = []
    for _, message in read:
        body = message.body
        if body.startswith(_MAGIC):
            metas.append(body[skip : body.find(b"\n", skip)])
    try:
        parsed: list[Any] = json.loads(b"[" + b",".join(metas) + b"]")
    except ValueError:
        return [decode(queue, message) for queue, message in read]  # one at a time
    out: list[DeadLetterRecord] = []
    it = iter(parsed)
    for queue, message in read:
        body = message.body
        if not body.startswith(_MAGIC):
            out.append(_broker_record(queue, message))
            continue
        meta = next(it)
        try:
            entry, job_id, owner, function, reason, failed_at = meta
            data = body[body.find(b"\n", skip) + 1 :]
            out.append(
                DeadLetterRecord(entry, job_id, owner, function, reason, float(failed_at), data)
            )
        except (ValueError, TypeError):
            out.append(_broker_record(queue, message))
    return out


def decode(queue: str, message: WireMessage) -> DeadLetterRecord:
    """The record a DLQ message holds (core's, or a broker-side dead letter)."""
    record = _core_record(message.body)
    if record is not None:
        return record
    return _broker_record(queue, message)


def _broker_record(queue: str, message: WireMessage) -> DeadLetterRecord:
    props = message.properties
    headers: dict[str, Any] = dict(props.headers or {})
    deaths = headers.get("x-death")
    death: dict[str, Any] = deaths[0] if isinstance(deaths, list) and deaths else {}
    failed_at = _timestamp(death.get("time", props.timestamp))
    job_id = props.message_id or ""
    digest = hashlib.sha256(f"{job_id}/{failed_at!r}/".encode() + message.body).hexdigest()
    return DeadLetterRecord(
        id=f"dlx-{digest[:24]}",
        job_id=job_id,
        queue=queue,
        function="",
        reason=BROKER_REASON,
        failed_at=failed_at,
        data=message.body,
    )


@dataclass(slots=True)
class _Entry:
    record: DeadLetterRecord
    tags: list[int] = field(default_factory=list)


class DeadLetterScan:
    """Every entry of some DLQs, held under exclusive consumers until exit.

    Use as ``async with DeadLetterScan(url, queues, busy_wait) as scan``;
    `remove` acks an entry's messages (duplicates included); leaving the block
    puts everything else back in order.
    """

    def __init__(self, url: str, queues: Sequence[str], busy_wait: float) -> None:
        self._url = url
        self._queues = list(queues)
        self._busy_wait = busy_wait
        self._wire: WireConnection | None = None
        self.entries: dict[str, _Entry] = {}
        self._read: list[tuple[str, WireMessage]] = []
        self._existing: list[str] = []
        self._more = asyncio.Event()

    async def __aenter__(self) -> DeadLetterScan:
        deadline = time.monotonic() + self._busy_wait
        while True:
            try:
                await self._open()
                return self
            except ChannelAccessRefused:
                # The server closed only the channel: try again on the next one.
                if time.monotonic() >= deadline:
                    await self._close()
                    raise Busy(
                        "dead-letter queue busy: another admin is reading it; try again"
                    ) from None
                await asyncio.sleep(0.05)
            except ChannelNotFoundEntity:
                # A DLQ was deleted between counting and consuming: start over
                # (it is skipped this time).
                if time.monotonic() >= deadline:
                    await self._close()
                    raise
                await asyncio.sleep(0.01)
            except BaseException:
                await self._close()
                raise

    async def _open(self) -> None:
        await self._collect(await self._subscribe())
        for record, (_, message) in zip(decode_all(self._read), self._read, strict=True):
            entry = self.entries.get(record.id)
            if entry is None:
                entry = self.entries[record.id] = _Entry(record)
            entry.tags.append(message.delivery_tag)
        self._read = []

    async def _subscribe(self) -> int:
        self.entries.clear()
        self._read = []
        wire = self._wire
        if wire is None:
            wire = self._wire = await WireConnection.open(self._url, name="upnext dead-letter scan")
        else:  # a retry: the server closed our last channel (busy, or a DLQ gone)
            await wire.open_channel()
        # Count first: a missing DLQ (404) closes the channel, so no consumer yet.
        counts: dict[str, int] = {}
        for queue in self._queues:
            try:
                counts[queue] = await wire.ready_count(dlq_queue(queue))
            except ChannelNotFoundEntity:
                await wire.open_channel()
        await wire.qos(0)
        self._existing = list(counts)
        for queue in counts:
            await wire.consume(dlq_queue(queue), self._receiver(wire, queue), exclusive=True)
        return sum(counts.values())

    def _receiver(self, wire: WireConnection, queue: str) -> Callable[[WireMessage], None]:
        read = self._read

        def on_message(message: WireMessage) -> None:
            if wire is self._wire:
                read.append((queue, message))
                self._more.set()

        return on_message

    async def _collect(self, expected: int) -> None:
        # Wait for every message counted at the start. When deliveries pause,
        # ask the server whether any are still ready: a slow server (messages
        # paged to disk) keeps us waiting, a removed message does not.
        while len(self._read) < expected:
            self._more.clear()
            try:
                async with asyncio.timeout(0.5):
                    await self._more.wait()
            except TimeoutError:
                if not await self._still_ready():
                    return

    async def _still_ready(self) -> bool:
        wire = self._wire
        assert wire is not None
        for queue in self._existing:
            # A DLQ deleted under us closes our channel (404, raised): what was
            # read is back on the server, and the scan starts over.
            if await wire.ready_count(dlq_queue(queue)):
                return True
        return False

    def check_held(self) -> None:
        """Raise BrokerError unless the scan still holds what it read."""
        wire = self._wire
        if wire is None or not wire.is_open or not wire.channel_open:
            raise BrokerError("the dead-letter scan lost its channel: nothing removed; try again")

    async def remove(self, entry_ids: Sequence[str]) -> int:
        """Remove these entries (each with its duplicates); returns how many existed."""
        self.check_held()
        wire = self._wire
        assert wire is not None
        removed = 0
        tags: list[int] = []
        for entry_id in entry_ids:
            entry = self.entries.pop(entry_id, None)
            if entry is None:
                continue
            removed += 1
            tags += entry.tags
        wire.ack(tags)
        return removed

    async def _close(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            with contextlib.suppress(Exception):
                await wire.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()
