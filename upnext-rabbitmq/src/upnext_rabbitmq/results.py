"""Results over a per-process reply queue, read by one consumer into a local table.

A producer names its reply queue (``upnext.reply.<uuid>``) when it connects
and puts that name in every job it submits; the worker publishes the final
result there (confirmed) before it acks the job. One consumer per process
fills a table of results kept for their ttl, and every `get_result` of the
process waits on that table: no waiter holds a connection, reads are
non-destructive. The reply queue is durable and client-named, so aio-pika
re-declares and re-consumes it after a reconnect; it expires an hour after its
process is gone. A result for a job submitted by another process is not
visible here: pair the broker with a Redis or PostgreSQL result store for that.
"""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from upnext.broker.protocol import ResultWrite

from upnext_rabbitmq._publish import Outgoing, persistent
from upnext_rabbitmq.topology import REPLY_QUEUE_EXPIRES_MS, reply_queue

__all__ = ["ReplyInbox"]


class ReplyInbox:
    """This process's reply queue and the table of results it has received."""

    def __init__(self) -> None:
        self.address = reply_queue(uuid.uuid4().hex)
        self._results: dict[str, tuple[bytes, float]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._started = False

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Declare the reply queue and consume it (restored on every reconnect)."""
        if self._started:
            return
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(
            self.address, durable=True, arguments={"x-expires": REPLY_QUEUE_EXPIRES_MS}
        )
        await queue.consume(self._on_message, no_ack=True)
        self._started = True

    def detach(self) -> None:
        """Forget the connection (closed); the next `start` consumes the same queue again."""
        self._started = False

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        job_id = message.correlation_id
        ttl = (message.headers or {}).get("x-upnext-ttl")
        if job_id and isinstance(ttl, int | float):
            self.store(job_id, message.body, float(ttl))

    def store(self, job_id: str, data: bytes, ttl: float) -> None:
        """Keep `data` as `job_id`'s result for `ttl` s and wake its waiters."""
        now = time.monotonic()
        while self._expiry and self._expiry[0][0] <= now:
            _, old = heapq.heappop(self._expiry)
            found = self._results.get(old)
            if found is not None and found[1] <= now:
                del self._results[old]
        if ttl > 0:
            self._results[job_id] = (data, now + ttl)
            heapq.heappush(self._expiry, (now + ttl, job_id))
        for fut in self._waiters.pop(job_id, []):
            if not fut.done():
                fut.set_result(None)

    def outgoing(self, write: ResultWrite) -> Outgoing | None:
        """The message that delivers `write` to its reply queue, or None if it needs none."""
        if write.reply_to is None or write.ttl <= 0:
            return None
        props = persistent(
            correlation_id=write.job_id,
            headers={"x-upnext-ttl": float(write.ttl)},
            expiration=str(max(int(write.ttl * 1000), 1)),
        )
        # Not mandatory: a reply queue whose process is gone just drops the result.
        return Outgoing("", write.reply_to, write.data, props, mandatory=False)

    def lookup(self, job_id: str) -> bytes | None:
        """The result of `job_id` if this process holds a live one."""
        found = self._results.get(job_id)
        if found is None:
            return None
        if found[1] <= time.monotonic():
            del self._results[job_id]
            return None
        return found[0]

    async def get(self, job_id: str, wait: float) -> bytes | None:
        """The result of `job_id`, waiting up to `wait` s for it to arrive."""
        deadline = time.monotonic() + wait
        while True:
            data = self.lookup(job_id)
            left = deadline - time.monotonic()
            if data is not None or left <= 0:
                return data
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(job_id, []).append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except TimeoutError:
                pass
            finally:
                waiters = self._waiters.get(job_id)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._waiters[job_id]
