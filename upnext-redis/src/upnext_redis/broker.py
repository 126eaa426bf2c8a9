"""RedisBroker: broker, result store, dead-letter admin and queue admin on Redis.

Every state change is one Lua script (scripts.py) over one queue's keys
(keys.py), and every operation is one round trip for a whole batch. A
receiver with nothing to do blocks on ``XREAD`` of each queue's ``wake``
stream from the entry id it last saw, so a wake-up between its script and
its block is never missed; each block is capped at the next due time or lease
deadline that the script reported from Redis ``TIME``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from upnext.broker.protocol import (
    Ack,
    Capabilities,
    DeadLetter,
    DeadLetterPage,
    DeadLetterRecord,
    Delivery,
    Envelope,
    QueueStats,
    Release,
    ResultWrite,
    Retry,
    SettleItem,
    SettleOutcome,
)
from upnext.errors import LeaseLost

from upnext_redis._client import RedisClient
from upnext_redis._config import parse_url
from upnext_redis._wire import pack
from upnext_redis.dlq import DeadLetters, delay_ms, pack_record
from upnext_redis.results import Results, ttl_ms
from upnext_redis.scripts import CANCEL, ENQUEUE, EXTEND, PURGE, RECEIVE, SETTLE, STATS

__all__ = ["RedisBroker"]

# Envelopes per enqueue script: big batches stay one round trip (pipelined)
# without holding Redis in one script for long.
_ENQUEUE_CHUNK = 2_000
# Items per settle script: Lua's unpack() takes at most ~8,000 values.
_SETTLE_CHUNK = 1_000


class _Groups:
    """Assigns 1-based script group indexes to queue names, in first-seen order."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self.index: dict[str, int] = {}

    def __call__(self, queue: str) -> int:
        found = self.index.get(queue)
        if found is None:
            found = self.index[queue] = len(self.index) + 1
        return found

    @property
    def keys(self) -> list[str]:
        return [key for q in self.index for key in self._client.keys.queue(q).group]


class RedisBroker:
    """Broker, ResultStore, DeadLetterAdmin and QueueAdmin on one Redis (>= 6.2)."""

    capabilities = Capabilities(
        timed_leases=True,
        counts_deliveries=True,
        cancel_queued=True,
        dlq_access="indexed",
        dedupes_on_enqueue=False,
        transactional_enqueue=False,
        delay_quantum=0.001,
    )

    def __init__(self, url: str) -> None:
        self.options = parse_url(url)
        self._client = RedisClient(self.options)
        self._results = Results(self._client)
        self._dlq = DeadLetters(self._client)
        self._known: set[str] = set()
        self._connected = False

    @classmethod
    def from_url(cls, url: str) -> RedisBroker:
        """A broker for `url` (connections open lazily, or on `connect()`)."""
        return cls(url)

    def __repr__(self) -> str:
        return f"RedisBroker({self.options.safe_url!r})"

    # -- lifecycle -----------------------------------------------------------

    async def connect(self) -> None:
        """Ping, load the scripts, check maxmemory-policy (once). BrokerUnavailable if down."""
        if not self._connected:
            await self._client.check_server()
            self._connected = True

    async def aclose(self) -> None:
        """Stop the result listener and close every connection."""
        self._connected = False
        await self._results.listener.aclose()
        await self._client.aclose()

    async def __aenter__(self) -> RedisBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- broker --------------------------------------------------------------

    def _register(self, queues: Sequence[str]) -> list[tuple[Any, ...]]:
        # SADD once per queue name per broker object: admin listing only.
        new = [q for q in dict.fromkeys(queues) if q not in self._known]
        if not new:
            return []
        self._known.update(new)
        return [("SADD", self._client.keys.queues, *new)]

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Store every envelope in one pipelined round trip; wake receivers."""
        if not envelopes:
            return
        calls = []
        for start in range(0, len(envelopes), _ENQUEUE_CHUNK):
            groups = _Groups(self._client)
            args: list[Any] = []
            for env in envelopes[start : start + _ENQUEUE_CHUNK]:
                args += (groups(env.queue), env.id, env.body, delay_ms(env.delay))
            calls.append((ENQUEUE, groups.keys, args))
        try:
            await self._client.eval_many(calls, self._register([e.queue for e in envelopes]))
        except BaseException:
            self._known.difference_update(e.queue for e in envelopes)
            raise

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Hand out up to `limit` due jobs, blocking up to `wait` s for one."""
        names = list(dict.fromkeys(queues))
        if not names or limit <= 0:
            return []
        groups = [key for q in names for key in self._client.keys.queue(q).group]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        args = (limit, max(1, delay_ms(lease)), len(names))
        while True:
            reply = await self._client.eval(RECEIVE, groups, args)
            if len(reply) > 2 + 3 * len(names):
                return _deliveries(names, reply)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            now_ms, next_ms = int(reply[0]), int(reply[1])
            block = min(remaining, self.options.recovery_interval)
            if next_ms >= 0:
                block = min(block, (next_ms - now_ms + 1) / 1000)
            await self._block(names, [bytes(reply[2 + 3 * i]) for i in range(len(names))], block)

    async def _block(self, names: list[str], seen: list[bytes], seconds: float) -> None:
        # XREAD from the ids the script saw: an XADD since then returns at once.
        ms = max(1, int(seconds * 1000))
        streams = [self._client.keys.queue(q).wake for q in names]
        with self._client.errors.boundary():
            await self._client.block_wire.run(
                [pack(["XREAD", "BLOCK", ms, "STREAMS", *streams, *seen])]
            )

    def _result_args(self, result: ResultWrite | None) -> list[Any]:
        if result is None or (ms := ttl_ms(result.ttl)) == 0:
            return []
        keys = self._client.keys.queue(result.queue)
        return [keys.result(result.job_id), result.data, ms, keys.result_channel(result.job_id)]

    def _settle_args(self, item: SettleItem, groups: _Groups) -> list[Any]:
        queue, job_id, token = _receipt(item.delivery)
        head = [groups(queue), job_id, token]
        if isinstance(item, Ack):
            result = self._result_args(item.result)
            return ["a" if result else "A", *head, *result]
        if isinstance(item, DeadLetter):
            rec = item.record
            result = self._result_args(item.result)
            dead = [groups(rec.queue), rec.id, repr(rec.failed_at), rec.function, pack_record(rec)]
            return ["d" if result else "D", *head, *dead, *result]
        if isinstance(item, Retry):
            return ["R", *head, item.body, delay_ms(item.delay)]
        if isinstance(item, Release):
            return ["L", *head]
        raise TypeError(f"not a settle item: {item!r}")

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Apply the batch in one round trip; LeaseLost for each item no longer held."""
        if not items:
            return []
        calls = []
        for start in range(0, len(items), _SETTLE_CHUNK):
            groups = _Groups(self._client)
            args: list[Any] = []
            for item in items[start : start + _SETTLE_CHUNK]:
                args += self._settle_args(item, groups)
            calls.append((SETTLE, groups.keys, args))
        dead_queues = [i.record.queue for i in items if isinstance(i, DeadLetter)]
        replies = await self._client.eval_many(calls, self._register(dead_queues))
        flags = [ok for reply in replies for ok in reply]
        return [None if ok else _lost(item.delivery) for ok, item in zip(flags, items, strict=True)]

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
        """Push every held lease to `lease` s from now, in one script."""
        if not deliveries:
            return []
        groups = _Groups(self._client)
        args: list[Any] = [max(1, delay_ms(lease))]
        for delivery in deliveries:
            queue, job_id, token = _receipt(delivery)
            args += (groups(queue), job_id, token)
        reply = await self._client.eval(EXTEND, groups.keys, args)
        return [None if ok else _lost(d) for ok, d in zip(reply, deliveries, strict=True)]

    async def cancel(self, queue: str, job_id: str) -> bool:
        """Remove a queued or scheduled job nobody holds; True if removed."""
        return bool(await self._client.eval(CANCEL, self._client.keys.queue(queue).group, [job_id]))

    # -- results -------------------------------------------------------------

    def reply_address(self) -> str | None:
        """Results live beside their queue; no reply address is needed."""
        return None

    async def put_results(self, writes: Sequence[ResultWrite]) -> None:
        """Store each result for its ttl and wake its waiters, in one round trip."""
        await self._results.put_results(writes)

    async def get_result(self, job_id: str, *, queue: str, wait: float) -> bytes | None:
        """The stored result (non-destructive), waiting up to `wait` s."""
        return await self._results.get_result(job_id, queue=queue, wait=wait)

    # -- dead-letter admin ---------------------------------------------------

    async def dlq_list(
        self,
        *,
        queue: str | None = None,
        function: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> DeadLetterPage:
        """Records newest first by a keyset cursor on (failed_at, id)."""
        return await self._dlq.page(queue=queue, function=function, limit=limit, cursor=cursor)

    async def dlq_get(self, entry_id: str) -> DeadLetterRecord:
        """One record; DeadLetterNotFound if absent."""
        return await self._dlq.get(entry_id)

    async def dlq_replay(self, entry_id: str, envelope: Envelope) -> None:
        """Remove the entry and enqueue `envelope` atomically; one replay wins."""
        register = ("SADD", self._client.keys.queues, envelope.queue)
        await self._dlq.replay(entry_id, envelope, list(register))

    async def dlq_delete(self, entry_id: str) -> None:
        """Remove an entry; DeadLetterNotFound if absent."""
        await self._dlq.delete(entry_id)

    async def dlq_purge(self, queue: str | None = None) -> int:
        """Remove every entry (of `queue`); returns how many."""
        return await self._dlq.purge(queue)

    async def dlq_count(self, queue: str | None = None) -> int:
        """How many entries (of `queue`)."""
        return await self._dlq.count(queue)

    # -- queue admin ---------------------------------------------------------

    async def queues(self) -> list[str]:
        """Every queue that has seen a job."""
        with self._client.errors.boundary():
            names: Any = await self._client.redis.smembers(self._client.keys.queues)
        return sorted(n.decode() for n in names)

    async def stats(self, queue: str) -> QueueStats:
        """Ready, scheduled, in-flight and dead counts, judged by Redis TIME."""
        ready, scheduled, in_flight, dead = await self._client.eval(
            STATS, self._client.keys.queue(queue).group, []
        )
        return QueueStats(int(ready), int(scheduled), int(in_flight), int(dead))

    async def purge(self, queue: str) -> int:
        """Drop every ready and scheduled job of `queue`; held ones stay."""
        return int(await self._client.eval(PURGE, self._client.keys.queue(queue).group, []))


def _receipt(delivery: Delivery) -> tuple[str, str, bytes]:
    receipt = delivery.receipt
    if isinstance(receipt, tuple) and len(receipt) == 3:
        queue, job_id, token = receipt
        if isinstance(queue, str) and isinstance(job_id, str) and isinstance(token, bytes):
            return queue, job_id, token
    # Not one of ours (or forged): a token no hand-out has makes it LeaseLost.
    return delivery.envelope.queue, delivery.envelope.id, b"-"


def _deliveries(names: list[str], reply: list[Any]) -> list[Delivery]:
    """Deliveries from a RECEIVE reply (layout in scripts.py)."""
    out = []
    pos = 2 + 3 * len(names)
    for i, queue in enumerate(names):
        token = bytes(reply[3 + 3 * i])
        for _ in range(int(reply[4 + 3 * i])):
            job_id = reply[pos].decode()
            count = int(reply[pos + 2])
            envelope = Envelope(job_id, queue, reply[pos + 1])
            out.append(Delivery(envelope, (queue, job_id, token), count > 1, count))
            pos += 3
    return out


def _lost(delivery: Delivery) -> LeaseLost:
    return LeaseLost(f"lease lost for job {delivery.envelope.id}")
