"""The dead-letter queue: a sorted-set index per queue plus a hash of records.

Each queue keeps its entries beside its jobs (same hash tag), so settle can
move a job into the DLQ in the same script that removes it. Admin calls that
are not given a queue look in every queue of ``<prefix>:queues`` within one
pipelined round trip. A record is packed as one JSON header line (the
indexed fields) followed by core's opaque bytes.
"""

from __future__ import annotations

import json
from typing import Any

from upnext.broker.protocol import DeadLetterQuery, DeadLetterRecord, Envelope
from upnext.errors import DeadLetterNotFound

from upnext_redis._client import RedisClient
from upnext_redis._millis import whole_ms
from upnext_redis.dlq_scripts import DLQ_DELETE, DLQ_LIST, DLQ_PURGE, DLQ_REPLAY

__all__ = ["DeadLetters", "delay_ms", "pack_record", "unpack_record"]


def delay_ms(delay: float) -> int:
    """A delay in whole milliseconds, rounded up (the backend's delay quantum)."""
    return whole_ms(delay, "delay")


def pack_record(record: DeadLetterRecord) -> bytes:
    """The stored form of a record: a JSON header line, then `data` as is."""
    header = [
        record.id,
        record.job_id,
        record.queue,
        record.function,
        record.reason,
        record.failed_at,
    ]
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + record.data


def unpack_record(packed: bytes) -> DeadLetterRecord:
    """The record `pack_record` stored."""
    header, _, data = packed.partition(b"\n")
    entry_id, job_id, queue, function, reason, failed_at = json.loads(header)
    return DeadLetterRecord(entry_id, job_id, queue, function, reason, float(failed_at), data)


class DeadLetters:
    """DeadLetterAdmin on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    async def _queues(self, queue: str | None) -> list[str]:
        if queue is not None:
            return [queue]
        (names,) = await self._client.commands([("SMEMBERS", self._client.keys.queues)])
        return sorted(name.decode() for name in names)

    def _group(self, queue: str) -> tuple[str, ...]:
        return self._client.keys.queue(queue).group

    async def records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """The records `query` asks for: each queue's newest, merged."""
        if query.job_id is not None:
            return query.select(await self._of_job(query.job_id, query.queue))
        args: list[Any] = [query.limit, "", "", query.function or ""]
        if query.before is not None:
            args[1:3] = [repr(query.before[0]), query.before[1]]
        names = await self._queues(query.queue)
        replies = await self._client.eval_many([(DLQ_LIST, self._group(q), args) for q in names])
        return query.select(unpack_record(packed) for reply in replies for packed in reply)

    async def _of_job(self, job_id: str, queue: str | None) -> list[DeadLetterRecord]:
        """Every entry of `job_id`, by the index settle keeps (NUL-separated entry ids)."""
        names = await self._queues(queue)
        if not names:
            return []
        keys = [self._client.keys.queue(name) for name in names]
        found = await self._client.commands([("HGET", k.dlq_fn, "\0" + job_id) for k in keys])
        reads = [
            ("HMGET", k.dlq_records, *ids.split(b"\0"))
            for k, ids in zip(keys, found, strict=True)
            if ids
        ]
        if not reads:
            return []
        replies = await self._client.commands(reads)
        return [unpack_record(p) for reply in replies for p in reply if p is not None]

    async def _locate(self, entry_id: str) -> tuple[str, bytes] | None:
        names = await self._queues(None)
        if not names:
            return None
        found = await self._client.commands(
            [("HGET", self._client.keys.queue(name).dlq_records, entry_id) for name in names]
        )
        for name, packed in zip(names, found, strict=True):
            if packed is not None:
                return name, packed
        return None

    async def get(self, entry_id: str) -> DeadLetterRecord:
        """One record, or DeadLetterNotFound."""
        located = await self._locate(entry_id)
        if located is None:
            raise DeadLetterNotFound(entry_id)
        return unpack_record(located[1])

    async def replay(self, entry_id: str, envelope: Envelope, register: list[Any]) -> None:
        """Remove the entry and enqueue `envelope` in one script (one winner)."""
        args = [entry_id, envelope.id, envelope.body, delay_ms(envelope.delay), envelope.priority]
        target = self._group(envelope.queue)
        # Core replays into the entry's own queue: try there first (one round trip).
        (done,) = await self._client.eval_many([(DLQ_REPLAY, target + target, args)], [register])
        if done:
            return
        located = await self._locate(entry_id)
        if located is None:
            raise DeadLetterNotFound(entry_id)
        if not await self._client.eval(DLQ_REPLAY, self._group(located[0]) + target, args):
            raise DeadLetterNotFound(entry_id)

    async def delete(self, entry_id: str) -> None:
        """Remove one entry, or DeadLetterNotFound."""
        names = await self._queues(None)
        replies = await self._client.eval_many(
            [(DLQ_DELETE, self._group(q), [entry_id]) for q in names]
        )
        if not any(replies):
            raise DeadLetterNotFound(entry_id)

    async def purge(self, queue: str | None = None) -> int:
        """Remove every entry (of `queue`); how many."""
        names = await self._queues(queue)
        replies = await self._client.eval_many([(DLQ_PURGE, self._group(q), []) for q in names])
        return sum(int(n) for n in replies)

    async def count(self, queue: str | None = None) -> int:
        """How many entries (of `queue`)."""
        names = await self._queues(queue)
        if not names:
            return 0
        counts = await self._client.commands(
            [("ZCARD", self._client.keys.queue(name).dlq_index) for name in names]
        )
        return sum(int(n) for n in counts)
