"""The prefetching consumer: work-queue deliveries buffered locally, acks batched.

One robust channel consumes every work queue a process receives from, with
manual acks and a prefetch window. Deliveries land in a per-queue buffer and
`receive` hands them out from there, woken the moment one arrives. A receipt
names the AMQP channel that delivered it: once aio-pika reopens the channel
(reconnect, channel error), the old deliveries are back on the server and
their receipts no longer settle anything (LeaseLost).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage
from upnext.broker.protocol import Delivery, Envelope

from upnext_rabbitmq.topology import HANDED_OUT_HEADER, work_queue

__all__ = ["Consumer", "Receipt"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """Which channel delivered a message, and its delivery tag there."""

    channel: RawChannel
    tag: int


class Consumer:
    """Consumes work queues into local buffers; hands out, acks and drains them."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        declare: Callable[[str], Awaitable[None]],
        *,
        prefetch: int | None,
        quorum: bool,
        consumer_arguments: dict[str, Any] | None = None,
    ) -> None:
        self._channel = channel
        self._declare = declare
        self._prefetch = prefetch
        self._quorum = quorum
        self._consumer_arguments = consumer_arguments
        self._raw: RawChannel | None = None
        self._buffers: dict[str, deque[DeliveredMessage]] = {}
        self._tags: dict[str, str] = {}
        # Unacked delivery tags of the current channel, in delivery (= tag) order.
        self._outstanding: dict[int, None] = {}
        # When each buffered delivery arrived (loop time), by delivery tag.
        self._since: dict[int, float] = {}
        # Jobs whose settle is re-publishing them: their new copy waits in the
        # buffer until the old one is acked (see `hold_back`).
        self._settling: Counter[str] = Counter()
        self._arrived = asyncio.Event()
        self._lock = asyncio.Lock()
        # The channel-wide prefetch window now in force (0: not set yet).
        self._window = 0
        channel.reopen_callbacks.add(self._on_reopen)

    # -- consuming -------------------------------------------------------------

    async def ensure(self, queues: Sequence[str], limit: int) -> None:
        """Consume every queue of `queues` on the current channel (idempotent)."""
        raw = await self._channel.get_underlay_channel()
        if raw is self._raw and all(q in self._tags for q in queues):
            return
        async with self._lock:
            raw = await self._channel.get_underlay_channel()
            if raw is not self._raw:
                self._reset(raw)
            if self._prefetch is None:
                self._prefetch = 2 * max(limit, 1)
            if not self._window:
                await self._set_window(self._prefetch)
            for queue in queues:
                if queue not in self._tags:
                    await self._declare(queue)
                    await self._consume(raw, queue)

    async def _consume(self, raw: RawChannel, queue: str) -> None:
        ok = await raw.basic_consume(
            work_queue(queue),
            partial(self._on_message, raw, queue),
            arguments=self._consumer_arguments,
        )
        self._tags[queue] = str(ok.consumer_tag)
        self._buffers.setdefault(queue, deque())

    async def _set_window(self, size: int) -> None:
        # Through aio-pika, so the robust channel restores it on reopen. Classic
        # queues share one channel-wide window (global), which can be resized
        # in place; quorum queues only know per-consumer windows.
        await self._channel.set_qos(prefetch_count=size, global_=not self._quorum)
        self._window = size

    async def widen(self, limit: int) -> None:
        """Make room for `limit` more deliveries beside those the caller still holds.

        The window is normally the configured prefetch; a caller that keeps
        more deliveries unsettled than that would otherwise starve, so the
        window grows to what it holds plus `limit`, and shrinks back once the
        held ones are settled.
        """
        base = self._prefetch or 2 * max(limit, 1)
        held = len(self._outstanding) - sum(len(b) for b in self._buffers.values())
        wanted = max(base, held + limit)
        shrink = self._window > base and self._window > wanted + base
        if not self._window or (wanted <= self._window and not shrink):
            return
        async with self._lock:
            await self._set_window(wanted)
            raw = self._raw
            if self._quorum and raw is not None:
                # A per-consumer window only applies to new consumers: replace
                # each (deliveries to the old one before its cancel-ok still land).
                for queue, tag in list(self._tags.items()):
                    await self._consume(raw, queue)
                    await raw.basic_cancel(tag)

    def take_stale(self, max_age: float) -> list[tuple[str, DeliveredMessage]]:
        """Remove and return buffered deliveries that arrived over `max_age` s ago.

        The server closes a channel holding a delivery unacked past its
        consumer_timeout, taking every job of the channel with it; a delivery
        that waits long in the buffer (all slots busy with long jobs) must be
        given back before that.
        """
        cutoff = asyncio.get_running_loop().time() - max_age
        stale: list[tuple[str, DeliveredMessage]] = []
        for queue, buffer in self._buffers.items():
            while buffer and self._since.get(buffer[0].delivery_tag or 0, cutoff) <= cutoff:
                message = buffer.popleft()
                self._since.pop(message.delivery_tag or 0, None)
                stale.append((queue, message))
        return stale

    def buffered(self, queue: str) -> int:
        """Deliveries of `queue` buffered here and not handed out."""
        return len(self._buffers.get(queue, ()))

    async def drop_buffered(self, queue: str) -> int:
        """Ack (discard) the buffered deliveries of `queue`; returns how many (purge)."""
        buffer = self._buffers.get(queue)
        if not buffer or self._raw is None:
            return 0
        messages = list(buffer)
        buffer.clear()
        for message in messages:
            self._since.pop(message.delivery_tag or 0, None)
        await self.ack([Receipt(m.channel, m.delivery_tag or 0) for m in messages])
        return len(messages)

    def _reset(self, raw: RawChannel) -> None:
        # Whatever the old channel delivered is back on the server (redelivered).
        self._raw = raw
        self._tags.clear()
        self._outstanding.clear()
        self._since.clear()
        for buffer in self._buffers.values():
            buffer.clear()
        raw.on_consumer_cancel_callbacks.add(self._on_cancel)

    def _on_reopen(self, _sender: object) -> None:
        raw = self._raw
        if raw is not None and not raw.is_closed:
            # aio-pika hands out the new channel before it runs this callback:
            # a receive already consumes on it. Its buffered deliveries stay;
            # dropped here they would sit unacked on the server for good.
            self._arrived.set()
            return
        self._raw = None
        self._tags.clear()
        self._outstanding.clear()
        self._since.clear()
        for buffer in self._buffers.values():
            buffer.clear()
        # Wake a blocked receive so it consumes again on the new channel.
        self._arrived.set()

    def _on_cancel(self, frame: Any) -> None:
        # The server cancelled a consumer (its queue was deleted): consume again later.
        tag = getattr(frame, "consumer_tag", None)
        for queue, known in list(self._tags.items()):
            if known == tag:
                del self._tags[queue]
        self._arrived.set()

    async def _on_message(self, raw: RawChannel, queue: str, message: DeliveredMessage) -> None:
        if raw is not self._raw:
            return
        tag = message.delivery_tag
        if tag is None:
            return
        self._outstanding[tag] = None
        self._since[tag] = asyncio.get_running_loop().time()
        self._buffers.setdefault(queue, deque()).append(message)
        self._arrived.set()

    async def wait(self, timeout: float) -> None:
        """Return when a delivery arrives (or the channel changed), or after `timeout` s."""
        self._arrived.clear()
        if any(self._deliverable(m) for b in self._buffers.values() for m in b):
            return
        try:
            async with asyncio.timeout(timeout):
                await self._arrived.wait()
        except TimeoutError:
            pass

    @contextlib.contextmanager
    def hold_back(self, job_ids: Sequence[str]) -> Iterator[None]:
        """Keep new copies of these jobs in the buffer until the block ends.

        A Retry or Release publishes a new copy, then acks the old delivery.
        The copy can arrive before the ack is sent; were it handed out and its
        worker killed at once, the old delivery would come back too, and the
        job would run twice per crash.
        """
        self._settling.update(job_ids)
        try:
            yield
        finally:
            self._settling.subtract(job_ids)
            self._settling += Counter()  # drop zero counts
            if job_ids:
                self._arrived.set()

    def _deliverable(self, message: DeliveredMessage) -> bool:
        return not self._settling or message.header.properties.message_id not in self._settling

    def take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        """Up to `limit` buffered deliveries of `queues`, round-robin."""
        raw = self._raw
        out: list[Delivery] = []
        if raw is None:
            return out
        if self._settling:
            return self._take_around_held(raw, queues, limit)
        buffers = [(q, b) for q in queues if (b := self._buffers.get(q))]
        while buffers and len(out) < limit:
            for queue, buffer in buffers:
                if buffer and len(out) < limit:
                    message = buffer.popleft()
                    self._since.pop(message.delivery_tag or 0, None)
                    out.append(self._delivery(raw, queue, message))
            buffers = [(q, b) for q, b in buffers if b]
        return out

    def _take_around_held(
        self, raw: RawChannel, queues: Sequence[str], limit: int
    ) -> list[Delivery]:
        out: list[Delivery] = []
        for queue in queues:
            buffer = self._buffers.get(queue)
            if not buffer:
                continue
            kept: deque[DeliveredMessage] = deque()
            while buffer:
                message = buffer.popleft()
                if len(out) < limit and self._deliverable(message):
                    self._since.pop(message.delivery_tag or 0, None)
                    out.append(self._delivery(raw, queue, message))
                else:
                    kept.append(message)
            buffer.extend(kept)
        return out

    def _delivery(self, raw: RawChannel, queue: str, message: DeliveredMessage) -> Delivery:
        props = message.header.properties
        envelope = Envelope(props.message_id or uuid.uuid4().hex, queue, message.body)
        prior = self.handed_out_before(message)
        receipt = Receipt(raw, message.delivery_tag or 0)
        return Delivery(envelope, receipt, prior > 0, prior + 1 if self._quorum else None)

    def handed_out_before(self, message: DeliveredMessage) -> int:
        """Hand-outs of this job before `message` that ended unsettled (0: none).

        A copy given back carries its original's count in a header. Quorum
        queues count returns to the queue (absent: none); a classic queue only
        flags a redelivery, counted here as one.
        """
        headers = message.header.properties.headers or {}
        carried = headers.get(HANDED_OUT_HEADER, 0)
        prior = carried if isinstance(carried, int) else 0
        if self._quorum:
            count = headers.get("x-delivery-count", 0)
            return prior + (count if isinstance(count, int) else 0)
        return prior + (1 if message.redelivered else 0)

    # -- settling --------------------------------------------------------------

    def live(self, receipt: object) -> bool:
        """True if `receipt` still settles its delivery (same channel, not acked)."""
        return (
            isinstance(receipt, Receipt)
            and receipt.channel is self._raw
            and receipt.tag in self._outstanding
            and not receipt.channel.is_closed
        )

    async def ack(self, receipts: Sequence[Receipt]) -> None:
        """Ack `receipts` (all live): one multiple ack for the contiguous prefix."""
        if not receipts or self._raw is None:
            return
        raw = self._raw
        tags = {r.tag for r in receipts}
        prefix = 0
        for tag in self._outstanding:
            if tag not in tags:
                break
            prefix = tag
        for tag in tags:
            self._outstanding.pop(tag, None)
        singles = sorted(t for t in tags if t > prefix)
        if prefix:
            await raw.basic_ack(prefix, multiple=True, wait=not singles)
        for i, tag in enumerate(singles):
            await raw.basic_ack(tag, wait=i == len(singles) - 1)

    async def stop(self, linger: float = 0.05) -> list[tuple[str, DeliveredMessage]]:
        """Cancel every consumer and return the buffered, never handed-out messages.

        Deliveries sent before the cancel-ok land as tasks: `linger` s lets
        them; one landing later stays buffered for the next `take`.
        """
        raw = self._raw
        if raw is not None and not raw.is_closed:
            for tag in list(self._tags.values()):
                await raw.basic_cancel(tag)
            await asyncio.sleep(linger)
        self._tags.clear()
        drained = [(q, m) for q, buffer in self._buffers.items() for m in buffer]
        for buffer in self._buffers.values():
            buffer.clear()
        self._since.clear()
        return drained
