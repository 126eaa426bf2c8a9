"""The prefetching consumer: work-queue deliveries buffered locally, acks batched.

One channel of a lean connection of its own (`_wire`: deliveries are parsed
as the socket hands them over, no task per delivery) consumes every work
queue a process receives from, with manual acks and a prefetch window.
Deliveries land in the prefetch buffer (`_prefetch_buffer`) and `receive`
hands them out from there, woken the moment one arrives. A receipt names the
channel that delivered it: once that channel is gone (connection lost,
channel closed by the server), its deliveries are back on the server and
their receipts no longer settle anything (LeaseLost). The next `ensure` opens
a new channel, reconnecting first if the connection itself is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiormq.exceptions import AMQPConnectionError
from upnext.broker.protocol import Delivery

from upnext_rabbitmq._prefetch_buffer import PrefetchBuffer
from upnext_rabbitmq._wire import WireConnection
from upnext_rabbitmq._wire_message import WireMessage
from upnext_rabbitmq.topology import HANDED_OUT_HEADER, work_queue

__all__ = ["Consumer", "Receipt"]

log = logging.getLogger("upnext.rabbitmq")
# Seconds between tries to reach a server that is gone.
RECONNECT_INTERVAL = 0.5


class Channel:
    """One channel of one connection: what a receipt is valid on."""

    __slots__ = ("number", "wire")

    def __init__(self, wire: WireConnection) -> None:
        self.wire = wire
        self.number = wire.channel

    @property
    def is_closed(self) -> bool:
        wire = self.wire
        return not (wire.is_open and wire.channel_open and wire.channel == self.number)


@dataclass(frozen=True, slots=True)
class Receipt:
    """Which channel delivered a message, and its delivery tag there."""

    channel: Channel
    tag: int


class Consumer:
    """Consumes work queues into local buffers; hands out, acks and drains them."""

    def __init__(
        self,
        amqp_url: str,
        declare: Callable[[str], Awaitable[None]],
        *,
        heartbeat: int,
        prefetch: int | None,
        quorum: bool,
        consumer_arguments: dict[str, Any] | None = None,
    ) -> None:
        self._amqp_url = amqp_url
        self._heartbeat = heartbeat
        self._declare = declare
        self._prefetch = prefetch
        self._quorum = quorum
        self._consumer_arguments = consumer_arguments
        self._wire: WireConnection | None = None
        self._channel: Channel | None = None
        self._buffer = PrefetchBuffer()
        self._tags: dict[str, str] = {}
        # Unacked delivery tags of the current channel, in delivery (= tag) order.
        self._outstanding: dict[int, None] = {}
        self._lock = asyncio.Lock()
        # The prefetch window now in force on the channel (0: not set yet).
        self._window = 0
        # True from a failed connect to the next good one (for the logs).
        self._unreachable = False

    # -- consuming -------------------------------------------------------------

    def consuming(self, queues: Sequence[str]) -> bool:
        """True if every queue of `queues` is consumed on a live channel (`ensure` is a no-op)."""
        channel = self._channel
        return (
            channel is not None
            and not channel.is_closed
            and bool(self._window)
            and all(q in self._tags for q in queues)
        )

    def consumes_beyond(self, queues: Sequence[str]) -> bool:
        """True if a queue not in `queues` is consumed (its deliveries would wait here)."""
        return any(queue not in queues for queue in self._tags)

    async def ensure(self, queues: Sequence[str], limit: int) -> None:
        """Consume every queue of `queues` on a live channel (idempotent)."""
        if self.consuming(queues):
            return
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed:
                channel = await self._open_channel()
            if self._prefetch is None:
                self._prefetch = 2 * max(limit, 1)
            if not self._window:
                await self._set_window(self._prefetch)
            for queue in queues:
                if queue not in self._tags:
                    await self._declare(queue)
                    await self._consume(channel, queue)

    async def _open_channel(self) -> Channel:
        # Whatever the old channel delivered is back on the server (redelivered).
        self._forget()
        wire = self._wire
        if wire is None or not wire.is_open:
            if wire is not None:
                await wire.close()
            wire = self._wire = await self._connect()
            wire.on_closed = self._on_closed
            wire.on_cancel = self._on_cancel
        else:
            await wire.open_channel()
        channel = self._channel = Channel(wire)
        return channel

    async def _connect(self) -> WireConnection:
        # Until the server is back (the caller's receive bounds the wait), but
        # a refused login or vhost is not going to change.
        while True:
            try:
                wire = await WireConnection.open(
                    self._amqp_url, heartbeat=self._heartbeat, name="upnext consumer"
                )
            except (OSError, AMQPConnectionError) as exc:
                code = exc.args[0] if exc.args else None
                if code in (403, 530):
                    raise
                if not self._unreachable:  # once per outage, not once per receive
                    log.warning("consumer cannot reach RabbitMQ (%s); retrying", exc)
                self._unreachable = True
                await asyncio.sleep(RECONNECT_INTERVAL)
            else:
                if self._unreachable:
                    log.info("consumer reconnected to RabbitMQ")
                self._unreachable = False
                return wire

    def _on_closed(self) -> None:
        # Every delivery of the channel is back on the server: drop the buffered
        # copies now, so that nothing gives them back a second time.
        self._forget()
        self._buffer.wake()

    def _forget(self) -> None:
        self._channel = None
        self._window = 0
        self._tags.clear()
        self._outstanding.clear()
        self._buffer.clear()

    async def close(self) -> None:
        """Close the connection; the server requeues whatever is unacked."""
        wire, self._wire = self._wire, None
        self._forget()
        if wire is not None:
            await wire.close()

    async def _consume(self, channel: Channel, queue: str) -> None:
        # The buffer first: deliveries may be read in the same chunk as consume-ok.
        self._buffer.add_queue(queue)
        # The tag too: a consume whose caller is cancelled still starts, and
        # must be known to be cancelled (`stop`).
        tag = self._tags[queue] = channel.wire.new_tag()
        try:
            await channel.wire.consume(
                work_queue(queue),
                partial(self._on_message, channel, queue),
                tag=tag,
                arguments=self._consumer_arguments,
            )
        except asyncio.CancelledError:
            raise
        except BaseException:
            if self._tags.get(queue) == tag:
                del self._tags[queue]
            raise

    async def _set_window(self, size: int) -> None:
        # Per consumer, for classic queues too: RabbitMQ 4.3 refuses the
        # channel-wide (global) window by default, and quorum queues never had it.
        assert self._wire is not None
        await self._wire.qos(size)
        self._window = size

    async def widen(self, limit: int) -> None:
        """Make room for `limit` more deliveries beside those the caller still holds.

        The window is normally the configured prefetch; a caller that keeps
        more deliveries unsettled than that would otherwise starve, so the
        window grows to what it holds plus `limit`, and shrinks back once the
        held ones are settled.
        """
        base = self._prefetch or 2 * max(limit, 1)
        held = len(self._outstanding) - self._buffer.total()
        wanted = max(base, held + limit)
        shrink = self._window > base and self._window > wanted + base
        if not self._window or (wanted <= self._window and not shrink):
            return
        # Shielded: a caller cancelled halfway must not leave an old consumer
        # running unknown to `stop`.
        resizing = asyncio.ensure_future(self._resize(wanted))
        resizing.add_done_callback(_retrieve)
        await asyncio.shield(resizing)

    async def _resize(self, window: int) -> None:
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed:
                return
            await self._set_window(window)
            # A per-consumer window only applies to new consumers: replace each
            # (deliveries to the old one before its cancel-ok still land, and
            # what it delivered stays unacked on the channel, settled as before).
            for queue, tag in list(self._tags.items()):
                await self._consume(channel, queue)
                await channel.wire.cancel(tag)

    def take_stale(self, max_age: float) -> list[tuple[str, WireMessage]]:
        """Remove and return buffered deliveries that arrived over `max_age` s ago."""
        return self._buffer.take_stale(max_age)

    def buffered(self, queue: str) -> int:
        """Deliveries of `queue` buffered here and not handed out."""
        return self._buffer.count(queue)

    async def drop_buffered(self, queue: str) -> int:
        """Ack (discard) the buffered deliveries of `queue`; returns how many (purge)."""
        channel = self._channel
        if channel is None:
            return 0
        messages = self._buffer.take_queue(queue)
        await self.ack([Receipt(channel, m.delivery_tag) for m in messages])
        return len(messages)

    def restore(self, taken: Sequence[tuple[str, WireMessage, Receipt]]) -> None:
        """Put taken-out deliveries back at the front of their buffers (if still live)."""
        self._buffer.put_back([(q, m) for q, m, receipt in taken if self.live(receipt)])
        if taken:
            self._buffer.wake()

    def receipt(self, message: WireMessage) -> Receipt | None:
        """The receipt of a buffered delivery taken out (None if its channel is gone)."""
        channel = self._channel
        return None if channel is None else Receipt(channel, message.delivery_tag)

    def _on_cancel(self, tag: str) -> None:
        # The server cancelled a consumer (its queue was deleted): consume again later.
        for queue, known in list(self._tags.items()):
            if known == tag:
                del self._tags[queue]
        self._buffer.wake()

    def _on_message(self, channel: Channel, queue: str, message: WireMessage) -> None:
        if channel is not self._channel:
            return
        self._outstanding[message.delivery_tag] = None
        self._buffer.append(queue, message)

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a delivery of `queues` arrives (or the channel changed), or after
        `timeout` s."""
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        await self._buffer.wait(queues, timeout)

    def wake(self) -> None:
        """End the `wait` in progress now."""
        self._buffer.wake()

    def hold_back(self, job_ids: Sequence[str]) -> AbstractContextManager[None]:
        """Keep new copies of these jobs in the buffer until the block ends (a settle's copies)."""
        return self._buffer.hold_back(job_ids)

    def take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        """Up to `limit` buffered deliveries of `queues`, round-robin."""
        channel = self._channel
        if channel is None:
            return []
        return self._buffer.take(queues, limit, partial(self._delivery, channel))

    def _delivery(self, channel: Channel, queue: str, message: WireMessage) -> Delivery:
        envelope = message.envelope(queue)
        prior = self.handed_out_before(message)
        receipt = Receipt(channel, message.delivery_tag)
        return Delivery(envelope, receipt, prior > 0, prior + 1 if self._quorum else None)

    def handed_out_before(self, message: WireMessage) -> int:
        """Hand-outs of this job before `message` that ended unsettled (0: none).

        A copy given back carries its original's count in a header. Quorum
        queues count returns to the queue (absent: none); a classic queue only
        flags a redelivery, counted here as one.
        """
        headers = message.headers
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
            and receipt.channel is self._channel
            and receipt.tag in self._outstanding
            and not receipt.channel.is_closed
        )

    async def ack(self, receipts: Sequence[Receipt]) -> None:
        """Ack `receipts` (all live): one multiple ack for the contiguous prefix."""
        channel = self._channel
        if not receipts or channel is None:
            return
        if channel.is_closed:
            raise ConnectionError("the consuming channel closed before the ack")
        tags = {r.tag for r in receipts}
        prefix = 0
        for tag in self._outstanding:
            if tag not in tags:
                break
            prefix = tag
        for tag in tags:
            self._outstanding.pop(tag, None)
        acks = [(prefix, True)] if prefix else []
        acks += [(tag, False) for tag in sorted(t for t in tags if t > prefix)]
        channel.wire.acks(acks)

    async def stop(self, linger: float = 0.05) -> list[tuple[str, WireMessage]]:
        """Cancel every consumer and return the buffered, never handed-out messages.

        Deliveries sent before the cancel-ok are read while waiting for it;
        `linger` s more lets any the socket still holds land. One landing
        later stays buffered for the next `take`.
        """
        async with self._lock:  # one request at a time on the connection
            channel = self._channel
            if channel is not None and not channel.is_closed:
                for tag in list(self._tags.values()):
                    await channel.wire.cancel(tag)
                await asyncio.sleep(linger)
            self._tags.clear()
        return self._buffer.drain()


def _retrieve(task: asyncio.Future[None]) -> None:
    # Its caller may be gone (cancelled): its error is the next request's to meet.
    if not task.cancelled():
        task.exception()
