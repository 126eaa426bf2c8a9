"""A minimal AMQP 0-9-1 connection for reading a whole queue fast (dead-letter scans).

A scan receives every message of a DLQ: 10,000 entries are 30,000 frames. A
general client pays for each frame (a read call, an object, a queue hop) and
for each delivery (a task); here frames are cut out of each chunk the socket
hands over, and a delivery is three slices and one callback. Only what a scan
needs is spoken: the handshake (PLAIN), one channel at a time, ``basic.qos``,
passive ``queue.declare``, exclusive ``basic.consume``, ``basic.ack`` and
closing. Content properties are kept as the raw header frame and decoded only
when asked (`WireMessage.properties`).

Channel errors the server raises (403 for an exclusive consumer already taken,
404 for a missing queue) surface as aiormq's exceptions, as they do on the
broker's main connection, and the channel is reopened under the next number.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelAccessRefused,
    ChannelClosed,
    ChannelNotFoundEntity,
)
from pamqp import commands, frame, header
from pamqp.base import Frame

__all__ = ["WireConnection", "WireMessage"]

_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY = 1, 2, 3
_FRAME_END = 0xCE
_HEAD = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">HH")
_DELIVER = (60, 60)
_U64 = struct.Struct(">Q")
_CONNECT_TIMEOUT = 10.0
_RPC_TIMEOUT = 15.0


@dataclass(slots=True)
class WireMessage:
    """One delivery: its tag and body, with the raw content header for the rest."""

    delivery_tag: int
    body: bytes
    raw_header: bytes

    @property
    def properties(self) -> commands.Basic.Properties:
        """The message's properties, decoded now (most scans never need them)."""
        _, _, value = frame.unmarshal(self.raw_header)
        assert isinstance(value, header.ContentHeader)
        return value.properties


Receiver = Callable[[WireMessage], None]


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: WireConnection) -> None:
        self._owner = owner
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos = 0
        end = len(buf)
        owner = self._owner
        while end - pos >= 7:
            kind, channel, size = _HEAD.unpack_from(buf, pos)
            stop = pos + 7 + size
            if stop >= end:
                break
            owner._frame(kind, channel, buf, pos, stop)
            pos = stop + 1
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(exc)


class WireConnection:
    """One AMQP connection with one open channel, made for a single scan."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._replies: deque[tuple[int, Frame]] = deque()
        self._wake = asyncio.Event()
        self._closed: BaseException | None = None
        self._consumers: dict[str, Receiver] = {}
        self.channel = 0
        # The delivery being assembled: (consumer tag, delivery tag, raw header, parts, left).
        self._deliver: tuple[str, int] | None = None
        self._raw_header = b""
        self._parts: list[bytes] = []
        self._left = 0

    # -- connecting ------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> WireConnection:
        """Connect and log in with the credentials of `url`, and open a channel."""
        self = cls()
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        secure = parts.scheme.lower() == "amqps"
        context = _ssl_context(query) if secure else None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            transport, _ = await loop.create_connection(
                lambda: _Protocol(self),
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
                )
                await self.open_channel()
            except BaseException:
                transport.abort()
                raise
        return self

    async def _handshake(self, user: str, password: str, vhost: str) -> None:
        assert self._transport is not None
        self._transport.write(header.ProtocolHeader().marshal())
        await self._expect(0, commands.Connection.Start)
        self._send(
            0,
            commands.Connection.StartOk(
                client_properties={"product": "upnext dead-letter scan"},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            ),
        )
        tune = await self._expect(0, commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        # No heartbeats: a scan lasts seconds, and closing is how it ends.
        self._send(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        self._send(0, commands.Connection.Open(virtual_host=vhost))
        await self._expect(0, commands.Connection.OpenOk)

    async def open_channel(self) -> None:
        """Open the next channel (after the server closed the last one)."""
        self.channel += 1
        self._send(self.channel, commands.Channel.Open())
        await self._expect(self.channel, commands.Channel.OpenOk)

    # -- requests --------------------------------------------------------------

    async def qos(self, prefetch: int) -> None:
        """Deliveries unacked at once on the channel (0: no limit)."""
        self._send(self.channel, commands.Basic.Qos(prefetch_count=prefetch))
        await self._expect(self.channel, commands.Basic.QosOk)

    async def ready_count(self, queue: str) -> int:
        """A passive declare: the queue's ready messages (404 if it is missing)."""
        self._send(self.channel, commands.Queue.Declare(queue=queue, passive=True))
        ok = await self._expect(self.channel, commands.Queue.DeclareOk)
        assert isinstance(ok, commands.Queue.DeclareOk)
        return ok.message_count or 0

    async def consume(self, queue: str, receiver: Receiver, *, exclusive: bool) -> None:
        """Consume `queue`; every delivery goes to `receiver` as it is read."""
        tag = f"scan.{len(self._consumers)}"
        self._consumers[tag] = receiver
        self._send(
            self.channel,
            commands.Basic.Consume(queue=queue, consumer_tag=tag, exclusive=exclusive),
        )
        await self._expect(self.channel, commands.Basic.ConsumeOk)

    def ack(self, tags: list[int]) -> None:
        """Ack these deliveries of the current channel (one write, no reply)."""
        if self._transport is None or self._closed is not None or not tags:
            return
        self._transport.write(
            b"".join(frame.marshal(commands.Basic.Ack(tag), self.channel) for tag in tags)
        )

    async def close(self) -> None:
        """Close the connection; the server requeues every unacked delivery, in order."""
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
            raise AMQPConnectionError("dead-letter scan connection is closed")
        self._transport.write(frame.marshal(value, channel))

    async def _next_reply(self) -> tuple[int, Frame]:
        while not self._replies:
            if self._closed is not None:
                raise AMQPConnectionError(str(self._closed)) from self._closed
            self._wake.clear()
            await self._wake.wait()
        return self._replies.popleft()

    async def _expect(self, channel: int, kind: type[Frame]) -> Frame:
        async with asyncio.timeout(_RPC_TIMEOUT):
            while True:
                number, value = await self._next_reply()
                if isinstance(value, commands.Channel.Close) and number == channel:
                    self._send(number, commands.Channel.CloseOk())
                    raise _channel_error(value)
                if isinstance(value, commands.Connection.Close):
                    self._closed = AMQPConnectionError(value.reply_code, value.reply_text)
                    raise self._closed
                if number == channel and isinstance(value, kind):
                    return value

    def _frame(self, kind: int, channel: int, buf: bytearray, pos: int, stop: int) -> None:
        payload = pos + 7
        if kind == _FRAME_METHOD and _METHOD_ID.unpack_from(buf, payload) == _DELIVER:
            # consumer tag (short string), then the delivery tag.
            size = buf[payload + 4]
            tag = bytes(buf[payload + 5 : payload + 5 + size]).decode()
            (delivery,) = _U64.unpack_from(buf, payload + 5 + size)
            self._deliver = (tag, delivery)
            return
        if kind == _FRAME_HEADER and self._deliver is not None:
            self._raw_header = bytes(buf[pos : stop + 1])
            (self._left,) = _U64.unpack_from(buf, payload + 4)
            self._parts = []
            if not self._left:
                self._delivered()
            return
        if kind == _FRAME_BODY and self._deliver is not None:
            self._parts.append(bytes(buf[payload:stop]))
            self._left -= stop - payload
            if self._left <= 0:
                self._delivered()
            return
        if kind == _FRAME_METHOD:
            _, number, value = frame.unmarshal(bytes(buf[pos : stop + 1]))
            assert isinstance(value, Frame)
            self._replies.append((number, value))
            self._wake.set()
        # Heartbeats and anything else: nothing to do.

    def _delivered(self) -> None:
        assert self._deliver is not None
        tag, delivery = self._deliver
        self._deliver = None
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        receiver = self._consumers.get(tag)
        if receiver is not None:
            receiver(WireMessage(delivery, body, self._raw_header))

    def _lost(self, exc: Exception | None) -> None:
        if self._closed is None:
            self._closed = exc or AMQPConnectionError("connection closed by the server")
        self._wake.set()


def _channel_error(close: commands.Channel.Close) -> Exception:
    text = close.reply_text
    if close.reply_code == 403:
        return ChannelAccessRefused(text)
    if close.reply_code == 404:
        return ChannelNotFoundEntity(text)
    return ChannelClosed(close.reply_code, text)


def _ssl_context(query: dict[str, Any]) -> ssl.SSLContext:
    """TLS settings from the URL's query, named as aiormq names them."""
    context = ssl.create_default_context(
        cafile=query.get("cafile"), capath=query.get("capath"), cadata=query.get("cadata")
    )
    if query.get("certfile"):
        context.load_cert_chain(query["certfile"], query.get("keyfile"))
    if str(query.get("no_verify_ssl", "0")).lower() in ("1", "true", "yes"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
