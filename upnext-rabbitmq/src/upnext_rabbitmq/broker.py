"""`RabbitBroker`: upnext's broker, result store and admin on RabbitMQ (aio-pika).

One robust connection (aio-pika reconnects by itself) declares the topology
and carries the reply queue; two lean connections of upnext's own (`_wire`)
carry what every job passes through: the worker's consumer (manual acks,
prefetch, local buffer; `_consumer`) and the confirming publisher (every
publish mandatory and confirmed, confirms of a batch awaited together;
`_publish`). Queues are declared once per process (`_declare`), on a
channel of the robust connection: topology errors close a declaring channel,
never the consumer's. A settle publishes what its outcomes need, then acks
(`_settle`).

What RabbitMQ cannot do, the capabilities say: no timed leases (an unacked
delivery is held until its channel closes; `extend` does nothing), no
delivery count on classic queues (`redelivered` is the AMQP flag, exact), no
removal of a queued job by id (`cancel_queued=False`), and dead-letter queues
read by scan. Delays are rounded up to 250 ms (`delay_quantum`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq.abc import AbstractConnection as RawConnection
from upnext.broker.optional import QueueStatsReader
from upnext.broker.protocol import (
    Capabilities,
    Delivery,
    Envelope,
    Retry,
    SettleItem,
    SettleOutcome,
)
from upnext.broker.redact import redact_url
from upnext.errors import BrokerUnavailable, LeaseLost, UnsupportedOperation

from upnext_rabbitmq._consumer import Consumer
from upnext_rabbitmq._declare import QueueDeclarer, declare_ladder
from upnext_rabbitmq._errors import map_errors
from upnext_rabbitmq._jobs import envelope_message, give_back
from upnext_rabbitmq._options import RabbitOptions, capabilities_of, parse_url, server_version
from upnext_rabbitmq._publish import Publisher
from upnext_rabbitmq._settle import settle_together
from upnext_rabbitmq.admin import AdminMixin
from upnext_rabbitmq.results import ReplyInbox, ResultsMixin, inbox_for
from upnext_rabbitmq.topology import quanta

__all__ = ["RabbitBroker"]

log = logging.getLogger("upnext.rabbitmq")


class RabbitBroker(ResultsMixin, AdminMixin):
    """Broker, result store, dead-letter admin and queue admin over RabbitMQ."""

    def __init__(self, url: str, *, inbox: ReplyInbox | None = None) -> None:
        self.url = url
        self.options: RabbitOptions = parse_url(url)
        self.capabilities: Capabilities = capabilities_of(self.options)
        self.server_version: tuple[int, ...] = ()
        self._connection: AbstractRobustConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()
        self._pruned_at = float("-inf")
        self._channel_lock = asyncio.Lock()
        self._declarer = QueueDeclarer(
            url,
            self.options,
            self._channel_lock,
            raw_connection=self._raw_connection,
            publisher=self._pub,
        )
        # The queues this process declared: the declarer's own set, which admin reads.
        self._declared = self._declarer.declared
        # Results: the process's inbox for this URL (a test may give its own,
        # to play a second process).
        self._inbox = inbox if inbox is not None else inbox_for(url)
        self._publisher: Publisher | None = None
        self._consumer: Consumer | None = None
        self._wakes = 0  # wake_receivers calls so far: a receive returns once it changes
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> RabbitBroker:
        """A broker for an ``amqp://`` or ``amqps://`` URL (the entry point factory)."""
        return cls(url)

    def __repr__(self) -> str:
        return f"RabbitBroker({redact_url(self.url)!r})"

    def management_stats(self, url: str) -> QueueStatsReader:
        """Every queue's depths from RabbitMQ's management API at `url` (opens nothing)."""
        from upnext_rabbitmq.management import ManagementAPI  # httpx: the `management` extra

        return ManagementAPI(url, self.options.amqp_url)

    # -- lifecycle -------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, open channels, declare the delay ladder and the reply queue."""
        async with self._connect_lock:
            if self._connection is not None:
                return
            # Built here, not by connect_robust, so a failed or cancelled first
            # connect is closed: left alone it would keep reconnecting for ever.
            connection = aio_pika.RobustConnection(make_url(self.options.amqp_url))
            try:
                with map_errors(self.url, "connecting"):
                    await connection.connect(timeout=10)
                with map_errors(self.url, "opening channels"):
                    await self._open(connection)
            except BaseException:
                publisher, self._publisher = self._publisher, None
                if publisher is not None:
                    await asyncio.shield(publisher.close())
                consumer, self._consumer = self._consumer, None
                if consumer is not None:
                    await asyncio.shield(consumer.close())
                await asyncio.shield(connection.close())
                raise
            self._connection = connection

    async def _open(self, connection: AbstractRobustConnection) -> None:
        self.server_version = server_version(connection)
        declaring = self._declarer.channel = await connection.channel(publisher_confirms=False)
        self._publisher = Publisher(
            self.url,
            self.options.amqp_url,
            self._declarer.redeclare,
            heartbeat=self.options.heartbeat,
        )
        await self._publisher.connect()
        arguments: dict[str, Any] | None = None
        if self.server_version >= (3, 12):
            arguments = {"x-consumer-timeout": int(self.options.consumer_timeout * 1000)}
        self._consumer = Consumer(
            self.options.amqp_url,
            # A consuming process retries: its queues' delay levels are
            # declared up front, so a first retry is not held up creating them.
            self._declarer.ensure_levels,
            heartbeat=self.options.heartbeat,
            prefetch=self.options.prefetch,
            quorum=self.options.queue_type == "quorum",
            consumer_arguments=arguments,
        )
        await declare_ladder(await declaring.get_underlay_channel())
        await self._inbox.start(connection)
        self._refresher = asyncio.create_task(self._refresh_stale(self._consumer))

    async def aclose(self) -> None:
        """Give back buffered deliveries (not counted), then close the connection."""
        connection = self._connection
        if connection is None:
            return
        if self._refresher is not None:
            self._refresher.cancel()
        try:
            if self._consumer is not None and not connection.is_closed:
                await self._release_buffered(self._consumer)
        except Exception:
            # Closing anyway: the server requeues what we could not give back
            # (marked redelivered, so core may count a lost run it did not have).
            log.warning("could not give back prefetched jobs on close", exc_info=True)
        finally:
            publisher, consumer = self._publisher, self._consumer
            self._connection = None
            self._publisher = self._consumer = self._declarer.channel = None
            if consumer is not None:
                await consumer.close()
            if publisher is not None:
                await publisher.close()
            await connection.close()

    async def _release_buffered(self, consumer: Consumer) -> None:
        await give_back(consumer, self._pub(), await consumer.stop())

    async def _refresh_stale(self, consumer: Consumer) -> None:
        # Runs for the broker's life: hand back prefetched jobs that waited a
        # quarter of consumer_timeout, before the server kills the channel.
        max_age = self.options.consumer_timeout / 4
        while True:
            await asyncio.sleep(max_age / 2)
            try:
                await give_back(consumer, self._pub(), consumer.take_stale(max_age))
            except Exception:
                log.warning("could not give back long-prefetched jobs", exc_info=True)

    async def __aenter__(self) -> RabbitBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _pub(self) -> Publisher:
        if self._publisher is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}; call connect()")
        return self._publisher

    def _cons(self) -> Consumer:
        if self._consumer is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}; call connect()")
        return self._consumer

    def _raw_connection(self) -> RawConnection:
        connection = self._connection
        transport = connection.transport if connection is not None else None
        if transport is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}")
        return transport.connection

    def _buffered(self, queue: str) -> int:
        return self._consumer.buffered(queue) if self._consumer is not None else 0

    async def _drop_buffered(self, queue: str) -> int:
        return await self._consumer.drop_buffered(queue) if self._consumer is not None else 0

    # -- topology --------------------------------------------------------------

    async def _ensure_queue(self, queue: str) -> None:
        await self._declarer.ensure_queue(queue)

    async def _ensure_levels(self, queue: str) -> None:
        await self._declarer.ensure_levels(queue)

    # -- broker ----------------------------------------------------------------

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Publish every envelope, persistent and confirmed, confirms awaited together."""
        publisher = self._pub()
        for queue in {e.queue for e in envelopes}:
            await self._ensure_queue(queue)
        for queue in {e.queue for e in envelopes if quanta(e.delay)}:
            await self._ensure_levels(queue)
        messages = [envelope_message(e, e.body, e.delay) for e in envelopes]
        await publisher.publish_all(messages, "enqueueing")

    async def give_back_prefetched(self) -> None:
        """Give back every prefetched job, uncounted; consuming resumes at the next receive.

        Core calls this before a job that already lost a run starts alone:
        were the process to die, these would come back redelivered.
        """
        consumer = self._cons()
        with map_errors(self.url, "giving back prefetched jobs"):
            await give_back(consumer, self._pub(), await consumer.stop(linger=0.0))

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Hand out buffered deliveries, waiting up to `wait` s for one to arrive.

        `lease` is not enforced: RabbitMQ holds a delivery until it is acked or
        its channel closes (capability timed_leases=False).
        """
        wakes = self._wakes  # before any await: none is missed
        consumer = self._cons()
        if consumer.consumes_beyond(queues):  # a queue left out now (paused): hold none of it
            await self.give_back_prefetched()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if not consumer.consuming(queues):
                try:
                    # While the server is gone this waits; never past the caller's wait.
                    async with asyncio.timeout(max(deadline - loop.time(), 0.0) + 0.5):
                        with map_errors(self.url, "consuming"):
                            await consumer.ensure(queues, limit)
                except TimeoutError:
                    return []
            out = consumer.take(queues, limit)
            left = deadline - loop.time()
            if out or left <= 0 or wakes != self._wakes:
                return out
            with map_errors(self.url, "consuming"):
                await consumer.widen(limit)
            if wakes != self._wakes:  # woken during the widen: `wait` would miss it
                return []
            await consumer.wait(queues, left)

    async def wake_receivers(self) -> None:
        """End the receives in flight early, with what they took (`WakeableReceive`)."""
        self._wakes += 1
        if self._consumer is not None:
            self._consumer.wake()

    async def settle(self, items: Sequence[SettleItem]) -> list[SettleOutcome]:
        """Publish what each item needs (confirmed, together), then ack in one go.

        An item whose delivery came on a channel since closed reports
        LeaseLost (RabbitMQ has put it back). If a publish fails for another
        reason, the successful items are acked and BrokerError is raised; the
        failed ones stay held, to be settled again.
        """
        consumer = self._cons()
        for queue in {
            i.delivery.envelope.queue for i in items if isinstance(i, Retry) and quanta(i.delay)
        }:
            await self._ensure_levels(queue)
        return await settle_together(self.url, consumer, self._pub(), self._inbox, items)

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[SettleOutcome]:
        """Nothing to extend (no timed leases); LeaseLost for deliveries already lost."""
        consumer = self._cons()
        return [
            None if consumer.live(d.receipt) else LeaseLost(f"lease lost for job {d.envelope.id}")
            for d in deliveries
        ]

    async def cancel(self, queue: str, job_id: str) -> bool:
        """Unsupported: AMQP cannot remove a queued message by id."""
        raise UnsupportedOperation("RabbitMQ cannot remove a queued job (cancel_queued=False)")
