"""Results over a per-process reply queue, read by one consumer into a local table.

A process names its reply queue (``upnext.reply.<uuid>``), one per broker
URL, and puts that name in every job it submits; the worker publishes the final
result there (confirmed) before it acks the job. One consumer per process
fills a table of results kept for their ttl, and every `get_result` of the
process waits on that table: no waiter holds a connection, reads are
non-destructive. The reply queue is durable and client-named, so aio-pika
re-declares and re-consumes it after a reconnect, and a broker closed and
built again in the same process (as a worker does when it stops) keeps the
address and the results already received; the queue expires an hour after its
process is gone. Jobs whose body was unreadable carry no address: their
results stay in the worker process's table only. A result for a job
submitted by another process is not visible here: pair the broker with a
Redis or PostgreSQL result store for that.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
import uuid
from collections.abc import Sequence

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from upnext.broker.protocol import ResultWrite

from upnext_rabbitmq._publish import Outgoing, Publisher, persistent
from upnext_rabbitmq.topology import REPLY_QUEUE_EXPIRES_MS, reply_queue

__all__ = ["ReplyInbox", "ResultsMixin", "inbox_for"]

# One inbox per broker URL in a process: its reply queue and its results.
_INBOXES: dict[str, ReplyInbox] = {}
_INBOXES_LOCK = threading.Lock()


def inbox_for(url: str) -> ReplyInbox:
    """This process's inbox for broker `url`, created on first use."""
    with _INBOXES_LOCK:
        inbox = _INBOXES.get(url)
        if inbox is None:
            inbox = _INBOXES[url] = ReplyInbox()
        return inbox


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ReplyInbox:
    """This process's reply queue and the table of results it has received."""

    def __init__(self) -> None:
        self.address = reply_queue(uuid.uuid4().hex)
        self._results: dict[str, tuple[bytes, float]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # Brokers of several event loops (the sync twins' loop) may share an inbox.
        self._lock = threading.Lock()

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Declare the reply queue and consume it on `connection` (restored on reconnect)."""
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(
            self.address, durable=True, arguments={"x-expires": REPLY_QUEUE_EXPIRES_MS}
        )
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        job_id = message.correlation_id
        ttl = (message.headers or {}).get("x-upnext-ttl")
        if job_id and isinstance(ttl, int | float):
            self.store(job_id, message.body, float(ttl))

    def store(self, job_id: str, data: bytes, ttl: float) -> None:
        """Keep `data` as `job_id`'s result for `ttl` s and wake its waiters."""
        now = time.monotonic()
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                found = self._results.get(old)
                if found is not None and found[1] <= now:
                    del self._results[old]
            if ttl > 0:
                self._results[job_id] = (data, now + ttl)
                heapq.heappush(self._expiry, (now + ttl, job_id))
            waiters = self._waiters.pop(job_id, [])
        for fut in waiters:
            loop = fut.get_loop()
            if loop is asyncio._get_running_loop():
                _wake(fut)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)

    def outgoing(self, write: ResultWrite) -> Outgoing | None:
        """The message that delivers `write` to its reply queue, or None if it needs none."""
        if write.reply_to is None or write.ttl <= 0:
            return None
        props = persistent(
            correlation_id=write.job_id,
            headers={"x-upnext-ttl": float(write.ttl)},
            # RabbitMQ documents TTLs up to 2**32-1 ms (49.7 days), below core's 90-day
            # maximum; the reply is read long before, and kept for the header's ttl.
            expiration=str(min(max(int(write.ttl * 1000), 1), 2**32 - 1)),
        )
        # Not mandatory: a reply queue whose process is gone just drops the result.
        return Outgoing("", write.reply_to, write.data, props, mandatory=False)

    def lookup(self, job_id: str) -> bytes | None:
        """The result of `job_id` if this process holds a live one."""
        with self._lock:
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
            with self._lock:
                self._waiters.setdefault(job_id, []).append(fut)
            try:
                # Not `wait_for`: on Python 3.11 it swallows a cancellation that
                # lands as the result arrives.
                async with asyncio.timeout(left):
                    await fut
            except TimeoutError:
                pass
            finally:
                self._forget(job_id, fut)

    def _forget(self, job_id: str, fut: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(job_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[job_id]


class ResultsMixin:
    """`ResultStore` for `RabbitBroker`: reply queues and the process's inbox."""

    _inbox: ReplyInbox

    def _pub(self) -> Publisher:
        raise NotImplementedError

    def reply_address(self) -> str | None:
        """This process's reply queue; results of its jobs are published there."""
        return self._inbox.address

    async def put_results(self, writes: Sequence[ResultWrite]) -> None:
        """Publish each result to its reply queue (confirmed); keep our own locally."""
        messages = []
        for write in writes:
            if write.reply_to in (None, self._inbox.address):
                self._inbox.store(write.job_id, write.data, write.ttl)
            elif (message := self._inbox.outgoing(write)) is not None:
                messages.append(message)
        await self._pub().publish_all(messages, "publishing results")

    async def get_result(self, job_id: str, *, queue: str, wait: float) -> bytes | None:
        """The result of a job this process submitted, waiting up to `wait` s."""
        return await self._inbox.get(job_id, wait)
