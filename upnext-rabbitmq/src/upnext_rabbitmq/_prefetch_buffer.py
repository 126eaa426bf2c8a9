"""The consumer's prefetch buffer: deliveries by queue, in arrival order, until handed out.

Deliveries wait here between the socket and `receive`. The buffer hands them
out round-robin across queues, keeps back new copies of jobs whose settle is
still re-publishing them (`hold_back`), gives up the ones that waited too
long (`take_stale`), and wakes a waiting `receive` when something changed.
It knows nothing of channels: when the consumer's channel goes, it is cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from upnext_rabbitmq._wire_message import WireMessage

__all__ = ["PrefetchBuffer"]

HandedOut = TypeVar("HandedOut")


class PrefetchBuffer:
    """Prefetched deliveries of each queue, waiting to be handed out."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[WireMessage]] = {}
        # When each buffered delivery arrived (loop time), by delivery tag.
        self._since: dict[int, float] = {}
        # Jobs whose settle is re-publishing them: their new copy waits in the
        # buffer until the old one is acked (see `hold_back`).
        self._settling: Counter[str] = Counter()
        self._arrived = asyncio.Event()

    def add_queue(self, queue: str) -> None:
        """Make room for `queue`'s deliveries (before consuming it: they may come at once)."""
        self._queues.setdefault(queue, deque())

    def append(self, queue: str, message: WireMessage) -> None:
        """Buffer a delivery of `queue` that just arrived, and wake a waiting receive."""
        self._since[message.delivery_tag] = asyncio.get_running_loop().time()
        self._queues[queue].append(message)
        self._arrived.set()

    def wake(self) -> None:
        """Wake a waiting receive (what it may consume or take has changed)."""
        self._arrived.set()

    def count(self, queue: str) -> int:
        """Deliveries of `queue` buffered here and not handed out."""
        return len(self._queues.get(queue, ()))

    def total(self) -> int:
        """Deliveries of every queue buffered here and not handed out."""
        return sum(len(buffer) for buffer in self._queues.values())

    def clear(self) -> None:
        """Drop every buffered delivery."""
        self._since.clear()
        for buffer in self._queues.values():
            buffer.clear()

    def messages(self) -> list[tuple[str, WireMessage]]:
        """Every buffered delivery with its queue (left in the buffer)."""
        return [(q, m) for q, buffer in self._queues.items() for m in buffer]

    def drain(self) -> list[tuple[str, WireMessage]]:
        """Remove and return every buffered delivery, with its queue."""
        drained = self.messages()
        self.clear()
        return drained

    def take_queue(self, queue: str) -> list[WireMessage]:
        """Remove and return every buffered delivery of `queue`."""
        buffer = self._queues.get(queue)
        if not buffer:
            return []
        messages = list(buffer)
        buffer.clear()
        for message in messages:
            self._since.pop(message.delivery_tag, None)
        return messages

    def take_stale(self, max_age: float) -> list[tuple[str, WireMessage]]:
        """Remove and return buffered deliveries that arrived over `max_age` s ago.

        The server closes a channel holding a delivery unacked past its
        consumer_timeout, taking every job of the channel with it; a delivery
        that waits long in the buffer (all slots busy with long jobs) must be
        given back before that.
        """
        cutoff = asyncio.get_running_loop().time() - max_age
        stale: list[tuple[str, WireMessage]] = []
        for queue, buffer in self._queues.items():
            while buffer and self._since.get(buffer[0].delivery_tag, cutoff) <= cutoff:
                message = buffer.popleft()
                self._since.pop(message.delivery_tag, None)
                stale.append((queue, message))
        return stale

    def put_back(self, taken: Sequence[tuple[str, WireMessage]]) -> None:
        """Put taken-out deliveries back at the front of their queues, in their order."""
        now = asyncio.get_running_loop().time()
        for queue, message in reversed(taken):
            self._queues.setdefault(queue, deque()).appendleft(message)
            self._since[message.delivery_tag] = now

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return at once if a delivery of `queues` can be handed out, else when woken or
        after `timeout` s (a delivery of another queue wakes it too: the caller looks again)."""
        self._arrived.clear()
        if any(self._deliverable(m) for q in queues for m in self._queues.get(q, ())):
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

    def _deliverable(self, message: WireMessage) -> bool:
        return not self._settling or message.message_id not in self._settling

    def take(
        self,
        queues: Sequence[str],
        limit: int,
        hand_out: Callable[[str, WireMessage], HandedOut],
    ) -> list[HandedOut]:
        """Up to `limit` deliveries of `queues`, round-robin, each as `hand_out` makes it.

        A delivery leaves the buffer once `hand_out` returned: if it raises,
        the delivery stays.
        """
        if self._settling:
            return self._take_around_held(queues, limit, hand_out)
        out: list[HandedOut] = []
        buffers = [(q, b) for q in queues if (b := self._queues.get(q))]
        while buffers and len(out) < limit:
            for queue, buffer in buffers:
                if buffer and len(out) < limit:
                    out.append(hand_out(queue, buffer[0]))
                    self._since.pop(buffer.popleft().delivery_tag, None)
            buffers = [(q, b) for q, b in buffers if b]
        return out

    def _take_around_held(
        self,
        queues: Sequence[str],
        limit: int,
        hand_out: Callable[[str, WireMessage], HandedOut],
    ) -> list[HandedOut]:
        out: list[HandedOut] = []
        for queue in queues:
            buffer = self._queues.get(queue)
            if not buffer:
                continue
            kept: deque[WireMessage] = deque()
            try:
                while buffer:
                    message = buffer[0]
                    if len(out) < limit and self._deliverable(message):
                        out.append(hand_out(queue, message))
                        self._since.pop(message.delivery_tag, None)
                    else:
                        kept.append(message)
                    buffer.popleft()
            finally:
                buffer.extendleft(reversed(kept))
        return out
