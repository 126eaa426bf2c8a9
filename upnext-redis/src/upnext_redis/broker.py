"""RedisBroker: broker, result store, dead-letter admin, queue admin and job browser on Redis.

Every state change is one Lua script (scripts.py) over one queue's keys
(keys.py), and every operation is one round trip for a whole batch.
Receiving (the script, and blocking on the queues' wake streams between
tries) is in `_receive`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from upnext.broker.optional import WaitingPage
from upnext.broker.protocol import (
    MAX_PRIORITY,
    Ack,
    Capabilities,
    DeadLetter,
    DeadLetterQuery,
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

from upnext_redis._client import RedisClient
from upnext_redis._config import parse_url
from upnext_redis._receive import Receiver
from upnext_redis._replies import (
    Groups,
    lost,
    receipt_of,
    unpart,
)
from upnext_redis.browse import Browser
from upnext_redis.dlq import DeadLetters, delay_ms, pack_record
from upnext_redis.results import Results, ttl_ms
from upnext_redis.scripts import CANCEL, ENQUEUE, EXTEND, PURGE, SETTLE, STATS
from upnext_redis.state import RedisStateStore

__all__ = ["RedisBroker"]

# Envelopes per enqueue script: big batches stay one round trip (pipelined)
# without holding Redis in one script for long.
_ENQUEUE_CHUNK = 2_000
# Items per settle script: Lua's unpack() takes at most ~8,000 values.
_SETTLE_CHUNK = 1_000


class RedisBroker(RedisStateStore):
    """Broker, ResultStore, DeadLetterAdmin, QueueAdmin, JobBrowser, StateStore on Redis >= 6.2."""

    capabilities = Capabilities(
        timed_leases=True,
        counts_deliveries=True,
        cancel_queued=True,
        dlq_access="indexed",
        dedupes_on_enqueue=True,
        transactional_enqueue=False,
        delay_quantum=0.001,
        priority_levels=MAX_PRIORITY + 1,
    )

    def __init__(self, url: str) -> None:
        self.options = parse_url(url)
        self._client = RedisClient(self.options)
        self._results = Results(self._client)
        self._dlq = DeadLetters(self._client)
        self._browser = Browser(self._client)
        self._receiver = Receiver(self._client, self.options.recovery_interval, self.settle)
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
        if len(envelopes) == 1 and envelopes[0].queue in self._known:
            # One job to a queue seen before (the common submit): one script, no SADD.
            env = envelopes[0]
            job = (1, env.id, env.body, delay_ms(env.delay), env.priority)
            await self._client.eval(ENQUEUE, self._client.keys.queue(env.queue).group, job)
            return
        calls = []
        for part in self._parts([e.queue for e in envelopes], _ENQUEUE_CHUNK):
            groups = Groups(self._client)
            args: list[Any] = []
            for env in (envelopes[i] for i in part):
                args += (groups(env.queue), env.id, env.body, delay_ms(env.delay), env.priority)
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
        return await self._receiver.receive(queues, limit=limit, lease=lease, wait=wait)

    async def wake_receivers(self) -> None:
        """End the receives in flight early, with what they took (`WakeableReceive`)."""
        await self._receiver.wake()

    def _result_args(self, result: ResultWrite | None) -> list[Any]:
        if result is None or (ms := ttl_ms(result.ttl)) == 0:
            return []
        keys = self._client.keys.queue(result.queue)
        return [keys.result(result.job_id), result.data, ms, keys.result_channel(result.job_id)]

    def _settle_args(self, item: SettleItem, groups: Groups) -> list[Any]:
        queue, job_id, token = receipt_of(item.delivery)
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
        parts = self._parts([receipt_of(i.delivery)[0] for i in items], _SETTLE_CHUNK)
        for part in parts:
            groups = Groups(self._client)
            args: list[Any] = []
            for i in part:
                args += self._settle_args(items[i], groups)
            calls.append((SETTLE, groups.keys, args))
        dead_queues = [i.record.queue for i in items if isinstance(i, DeadLetter)]
        replies = await self._client.eval_many(calls, self._register(dead_queues))
        flags = unpart(parts, replies, len(items))
        return [None if ok else lost(item.delivery) for ok, item in zip(flags, items, strict=True)]

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
        """Push every held lease to `lease` s from now, in one script."""
        if not deliveries:
            return []
        calls = []
        parts = self._parts([receipt_of(d)[0] for d in deliveries], _SETTLE_CHUNK)
        for part in parts:
            groups = Groups(self._client)
            args: list[Any] = [max(1, delay_ms(lease))]
            for i in part:
                queue, job_id, token = receipt_of(deliveries[i])
                args += (groups(queue), job_id, token)
            calls.append((EXTEND, groups.keys, args))
        flags = unpart(parts, await self._client.eval_many(calls), len(deliveries))
        return [None if ok else lost(d) for ok, d in zip(flags, deliveries, strict=True)]

    def _parts(self, queues: Sequence[str], chunk: int) -> list[list[int]]:
        """Index lists, one per script call: chunks of the batch, split by queue on Cluster."""
        if not self._client.cluster:
            return [
                list(range(i, min(i + chunk, len(queues)))) for i in range(0, len(queues), chunk)
            ]
        by_queue: dict[str, list[int]] = {}
        for i, queue in enumerate(queues):
            by_queue.setdefault(queue, []).append(i)
        return [idx[i : i + chunk] for idx in by_queue.values() for i in range(0, len(idx), chunk)]

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

    async def dlq_records(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """The records `query` asks for, newest first by (failed_at, id)."""
        return await self._dlq.records(query)

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
        (names,) = await self._client.commands([("SMEMBERS", self._client.keys.queues)])
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

    async def waiting_jobs(
        self, queue: str, *, scheduled: bool, limit: int, cursor: str | None = None
    ) -> WaitingPage:
        """Waiting jobs of `queue`: ready ones in hand-out order, or scheduled soonest first."""
        return await self._browser.waiting_jobs(
            queue, scheduled=scheduled, limit=limit, cursor=cursor
        )
