"""A minimal AMQP 0-9-1 connection, for the paths where a general client costs most.

The worker's consumer receives every job, a dead-letter scan every message
of a DLQ (10,000 entries are 30,000 frames), and the publisher waits for a
confirm on every enqueue. A general client pays for each frame (a read call,
an object, a queue hop) and for each delivery (a task); here frames are cut
out of each chunk the socket hands over, a delivery is three slices and one
callback, and a publish is one write. Only what those paths need is spoken:
the handshake (PLAIN, TLS from the URL), heartbeats, one channel at a time,
``basic.qos``, passive ``queue.declare``, ``basic.consume`` and ``cancel``
(the server's too), ``basic.ack``, content of deliveries and returns, and
closing. Subclasses add what they handle (`_method`, `_on_method`); content
properties stay as the raw header frame (`WireMessage`).

Frames are cut out of each read and contents reassembled by `_wire_frames`.
Channel errors the server raises (403 for an exclusive consumer already taken,
404 for a missing queue, 406 for an unknown delivery tag or a consumer
timeout) are answered at once and surface as aiormq's exceptions to a
request waiting on the channel, and through `on_closed` otherwise; the
channel is reopened under the next number. Nothing reconnects here: the
owner opens a new connection when `is_open` turns False.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from aiormq.exceptions import AMQPConnectionError
from pamqp import commands, frame, header
from pamqp.base import Frame

from upnext_rabbitmq._wire_frames import (
    U64,
    ContentSink,
    FrameReader,
    channel_error,
    tls_context,
)
from upnext_rabbitmq._wire_message import WireMessage

__all__ = ["WireConnection"]

_METHOD_ID = struct.Struct(">HH")
_DELIVER = (60, 60)
_ACK_FRAME = struct.Struct(">BHIHHQBB")  # method frame of basic.ack, frame-end included
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_CONNECT_TIMEOUT = 10.0
_RPC_TIMEOUT = 15.0


F = TypeVar("F", bound=Frame)
Receiver = Callable[[WireMessage], None]


class WireConnection:
    """One AMQP connection with one open channel at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._replies: deque[tuple[int, Frame]] = deque()
        self._wake = asyncio.Event()
        # Held from a request's send to its reply (see `_rpc`).
        self._rpc_lock = asyncio.Lock()
        self._closed: BaseException | None = None
        self._consumers: dict[str, Receiver] = {}
        self._consumed = 0
        self.channel = 0
        # False once the server closed the current channel (until the next opens).
        self.channel_open = False
        # Called when the connection is lost or the server closes the channel,
        # and with its tag when the server cancels a consumer (queue deleted).
        self.on_closed: Callable[[], None] | None = None
        self.on_cancel: Callable[[str], None] | None = None
        self.frame_max = 131072
        # Set on every read; the heartbeat timer clears it.
        self.heard = True
        self._silent = 0
        self._beat: asyncio.TimerHandle | None = None
        self._reader = FrameReader(self)

    @property
    def is_open(self) -> bool:
        """True until the connection is lost or closed."""
        return self._transport is not None and self._closed is None

    # -- connecting ------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, *, heartbeat: int = 0, name: str = "upnext") -> Self:
        """Connect and log in with the credentials of `url`, and open a channel.

        `heartbeat` (seconds, 0: none) is asked of the server; with it the
        connection beats twice per interval and is dropped after two silent
        intervals. `name` is how the server's management UI lists it.
        """
        self = cls()
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        secure = parts.scheme.lower() == "amqps"
        context = tls_context(query) if secure else None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            transport, _ = await loop.create_connection(
                lambda: self._reader,
                parts.hostname or "localhost",
                parts.port or (5671 if secure else 5672),
                ssl=context,
            )
            self._transport = transport
            try:
                await self._handshake(
                    unquote(parts.username or "guest"),
                    unquote(parts.password or "guest"),
                    unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
                    heartbeat,
                    name,
                )
                await self.open_channel()
            except BaseException:
                self._stop_beating()
                transport.abort()
                raise
        return self

    async def _handshake(
        self, user: str, password: str, vhost: str, heartbeat: int, name: str
    ) -> None:
        assert self._transport is not None
        self._transport.write(header.ProtocolHeader().marshal())
        await self._expect(0, commands.Connection.Start)
        self._send(
            0,
            commands.Connection.StartOk(
                client_properties={
                    "product": "upnext",
                    "connection_name": name,
                    "capabilities": {
                        "publisher_confirms": True,
                        "basic.nack": True,
                        "authentication_failure_close": True,
                        "consumer_cancel_notify": True,
                    },
                },
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            ),
        )
        tune = await self._expect(0, commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        if tune.frame_max:
            self.frame_max = tune.frame_max
        self._send(0, commands.Connection.TuneOk(tune.channel_max, self.frame_max, heartbeat))
        self._send(0, commands.Connection.Open(virtual_host=vhost))
        await self._expect(0, commands.Connection.OpenOk)
        if heartbeat:
            self._start_beating(heartbeat / 2)

    def _start_beating(self, every: float) -> None:
        def beat() -> None:
            transport = self._transport
            if transport is None or self._closed is not None:
                return
            self._silent = 0 if self.heard else self._silent + 1
            self.heard = False
            if self._silent >= 4:  # two whole intervals without a frame
                transport.abort()
                return
            transport.write(_HEARTBEAT)
            self._beat = loop.call_later(every, beat)

        loop = asyncio.get_running_loop()
        self._beat = loop.call_later(every, beat)

    def _stop_beating(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    async def open_channel(self) -> None:
        """Open the next channel (after the server closed the last one)."""
        self.channel += 1
        await self._rpc(commands.Channel.Open(), commands.Channel.OpenOk)
        self.channel_open = True

    # -- requests --------------------------------------------------------------

    async def qos(self, prefetch: int) -> None:
        """Deliveries unacked at once per consumer started after this (0: no limit).

        Never RabbitMQ's channel-wide ``global`` window: 4.3 refuses it by default.
        """
        await self._rpc(commands.Basic.Qos(prefetch_count=prefetch), commands.Basic.QosOk)

    async def ready_count(self, queue: str) -> int:
        """A passive declare: the queue's ready messages (404 if it is missing)."""
        declare = commands.Queue.Declare(queue=queue, passive=True)
        ok = await self._rpc(declare, commands.Queue.DeclareOk)
        return ok.message_count or 0

    def new_tag(self) -> str:
        """A consumer tag not used on this connection yet."""
        self._consumed += 1
        return f"upnext.{self._consumed}"

    async def consume(
        self,
        queue: str,
        receiver: Receiver,
        *,
        tag: str | None = None,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Consume `queue`; every delivery goes to `receiver` as it is read. Returns the tag.

        Pass `tag` (from `new_tag`) to know it before the reply: a consume
        whose caller is cancelled still starts on the server.
        """
        tag = tag or self.new_tag()
        self._consumers[tag] = receiver
        request = commands.Basic.Consume(
            queue=queue, consumer_tag=tag, exclusive=exclusive, arguments=arguments
        )
        await self._rpc(request, commands.Basic.ConsumeOk)
        return tag

    async def cancel(self, tag: str) -> None:
        """Stop a consumer; deliveries sent before the server's reply still arrive."""
        # Every delivery to it comes before the cancel-ok, on the same channel:
        # its receiver goes then, not before (nor when the caller is cancelled).
        forget = partial(self._consumers.pop, tag, None)
        await self._rpc(commands.Basic.Cancel(consumer_tag=tag), commands.Basic.CancelOk, forget)

    def ack(self, tags: list[int]) -> None:
        """Ack these deliveries of the current channel (one write, no reply)."""
        self.acks([(tag, False) for tag in tags])

    def acks(self, acks: list[tuple[int, bool]]) -> None:
        """Send (delivery tag, multiple) acks on the current channel in one write.

        Nothing is sent once the channel is closed: its deliveries are back on
        the server, and an ack there would close the connection.
        """
        transport = self._transport
        if transport is None or self._closed is not None or not (acks and self.channel_open):
            return
        channel = self.channel
        transport.write(
            b"".join(
                _ACK_FRAME.pack(1, channel, 13, 60, 80, tag, int(multiple), 0xCE)
                for tag, multiple in acks
            )
        )

    async def close(self) -> None:
        """Close the connection; the server requeues every unacked delivery, in order."""
        self._stop_beating()
        transport, self._transport = self._transport, None
        if transport is None:
            return
        try:
            if self._closed is None:
                transport.write(frame.marshal(commands.Connection.Close(200, "done", 0, 0), 0))
                async with asyncio.timeout(5.0):
                    while True:
                        _, reply = await self._next_reply()
                        if isinstance(reply, commands.Connection.CloseOk):
                            break
        except (TimeoutError, AMQPConnectionError):
            pass
        finally:
            transport.close()

    # -- frames ----------------------------------------------------------------

    def _send(self, channel: int, value: Frame) -> None:
        if self._transport is None or self._closed is not None:
            raise AMQPConnectionError("connection is closed")
        self._transport.write(frame.marshal(value, channel))

    async def _next_reply(self) -> tuple[int, Frame]:
        while not self._replies:
            if self._closed is not None:
                raise AMQPConnectionError(str(self._closed)) from self._closed
            self._wake.clear()
            await self._wake.wait()
        return self._replies.popleft()

    async def _rpc(
        self, request: Frame, kind: type[F], then: Callable[[], object] | None = None
    ) -> F:
        """Send `request` on the current channel and return its reply (of type `kind`).

        One request at a time, and cancelling the caller does not cut the
        exchange short: its reply is still read by it, never taken later for
        another request's, and `then` runs when it arrives.
        """
        channel = self.channel
        await self._rpc_lock.acquire()
        try:
            self._send(channel, request)
        except BaseException:
            self._rpc_lock.release()
            raise
        exchange = asyncio.ensure_future(self._expect(channel, kind))
        exchange.add_done_callback(partial(self._exchanged, then))
        return await asyncio.shield(exchange)

    def _exchanged(self, then: Callable[[], object] | None, exchange: asyncio.Future[Any]) -> None:
        self._rpc_lock.release()
        if not exchange.cancelled() and exchange.exception() is None and then is not None:
            then()

    async def _expect(self, channel: int, kind: type[F]) -> F:
        async with asyncio.timeout(_RPC_TIMEOUT):
            while True:
                number, value = await self._next_reply()
                if isinstance(value, commands.Channel.Close) and number == channel:
                    raise channel_error(value)
                if isinstance(value, commands.Connection.Close):
                    raise AMQPConnectionError(value.reply_code, value.reply_text)
                if number == channel and isinstance(value, kind):
                    return value

    def _method(self, channel: int, buf: bytearray, pos: int, stop: int) -> None:
        payload = pos + 7
        if _METHOD_ID.unpack_from(buf, payload) == _DELIVER:
            # consumer tag (short string), then the delivery tag.
            size = buf[payload + 4]
            tag = bytes(buf[payload + 5 : payload + 5 + size]).decode()
            (delivery,) = U64.unpack_from(buf, payload + 5 + size)
            redelivered = bool(buf[payload + 13 + size] & 1)
            receiver = self._consumers.get(tag)
            self.expect_content(
                lambda raw, body: (
                    receiver(WireMessage(delivery, body, raw, redelivered)) if receiver else None
                )
            )
            return
        _, number, value = frame.unmarshal(bytes(buf[pos : stop + 1]))
        assert isinstance(value, Frame)
        if isinstance(value, commands.Connection.Close):
            # Answered at once: the server waits for close-ok before dropping us.
            self._closed = AMQPConnectionError(value.reply_code, value.reply_text)
            if self._transport is not None:
                self._transport.write(frame.marshal(commands.Connection.CloseOk(), 0))
                self._transport.close()
        elif isinstance(value, commands.Channel.Close) and number == self.channel:
            # Answered at once too; a request waiting on the channel raises.
            self.channel_open = False
            if self._transport is not None:
                self._transport.write(frame.marshal(commands.Channel.CloseOk(), number))
            if self.on_closed is not None:
                self.on_closed()
        elif isinstance(value, commands.Basic.Cancel):
            tag = value.consumer_tag or ""
            self._consumers.pop(tag, None)
            if self.on_cancel is not None:
                self.on_cancel(tag)
            return
        if not self._on_method(number, value):
            self._replies.append((number, value))
            self._wake.set()

    def _on_method(self, channel: int, value: Frame) -> bool:
        """A method frame nobody's request is waiting for; True if it was handled here."""
        return False

    def expect_content(self, sink: ContentSink) -> None:
        """Send the content (header and body) that follows the last method to `sink`."""
        self._reader.expect_content(sink)

    def _lost(self, exc: Exception | None) -> None:
        self._stop_beating()
        self.channel_open = False
        if self._closed is None:
            self._closed = exc or AMQPConnectionError("connection closed by the server")
        self._wake.set()
        if self.on_closed is not None:
            self.on_closed()
