"""A channel in confirm mode on a lean connection (`_wire`): one write per publish.

`publish` writes a message's frames at once and returns a future that the
broker's ``basic.ack`` resolves, its ``basic.nack`` fails (`Nacked`), and a
``basic.return`` of a mandatory message fails (`Returned`) before the ack that
follows it. A channel the server closes (404: an exchange deleted by hand)
fails everything in flight on it with aiormq's error for the close, and a lost
connection fails everything with `AMQPConnectionError`; `reopen_channel`
starts over on the next channel number.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Self

from aiormq.exceptions import AMQPConnectionError
from pamqp import commands, frame, header
from pamqp.base import Frame

from upnext_rabbitmq._wire import WireConnection
from upnext_rabbitmq._wire_frames import channel_error

__all__ = ["ConfirmConnection", "Nacked", "Returned"]

_ACK = (60, 80)
_METHOD_ID = struct.Struct(">HH")
_U64 = struct.Struct(">Q")
_FRAME = struct.Struct(">BHI")
_PUBLISH_ID = struct.pack(">HHH", 60, 40, 0)  # basic.publish, reserved ticket
_BODY = 3
_END = b"\xce"


class Returned(Exception):
    """The broker returned a mandatory message: nothing was bound to take it."""


class Nacked(Exception):
    """The broker refused to take responsibility for a message (basic.nack)."""


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {text[:40]!r}...")
    return bytes((len(raw),)) + raw


class ConfirmConnection(WireConnection):
    """Publishes with confirms on one channel; each publish gets a future."""

    def __init__(self) -> None:
        super().__init__()
        # In flight on the current channel, by delivery tag: (future, exchange,
        # routing key, message id, body); the id and body only to match returns.
        self._pending: dict[int, tuple[asyncio.Future[None], str, str, str | None, bytes]] = {}
        self._next_tag = 1
        self._oldest = 1
        self.ready = False

    @classmethod
    async def open(cls, url: str, *, heartbeat: int = 0, name: str = "upnext") -> Self:
        """Connect (see `WireConnection.open`) and put the channel in confirm mode."""
        self = await super().open(url, heartbeat=heartbeat, name=name)
        try:
            await self._select()
        except BaseException:
            await self.close()
            raise
        return self

    async def _select(self) -> None:
        await self._rpc(commands.Confirm.Select(), commands.Confirm.SelectOk)
        self._next_tag = self._oldest = 1
        self.ready = True

    async def reopen_channel(self) -> None:
        """Open the next channel in confirm mode (after the server closed the last)."""
        await self.open_channel()
        await self._select()

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: commands.Basic.Properties,
        *,
        mandatory: bool,
    ) -> asyncio.Future[None]:
        """Write one message now; the future is done when the broker confirms it."""
        transport = self._transport
        if transport is None or self._closed is not None or not self.ready:
            raise AMQPConnectionError("publishing connection is not open")
        channel = self.channel
        method = b"".join(
            (_PUBLISH_ID, _short(exchange), _short(routing_key), b"\x01" if mandatory else b"\x00")
        )
        parts = [_FRAME.pack(1, channel, len(method)), method, _END]
        parts.append(frame.marshal(header.ContentHeader(0, len(body), properties), channel))
        step = self.frame_max - 8
        for start in range(0, len(body), step):
            chunk = body[start : start + step]
            parts += (_FRAME.pack(_BODY, channel, len(chunk)), chunk, _END)
        transport.write(b"".join(parts))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # An empty message-id is not sent at all: a return carries None for it.
        sent_id = properties.message_id or None
        self._pending[self._next_tag] = (future, exchange, routing_key, sent_id, body)
        self._next_tag += 1
        return future

    # -- what the broker sends -------------------------------------------------

    def _method(self, channel: int, buf: bytearray, pos: int, stop: int) -> None:
        payload = pos + 7
        if _METHOD_ID.unpack_from(buf, payload) == _ACK:
            if channel == self.channel:
                (tag,) = _U64.unpack_from(buf, payload + 4)
                self._settle(tag, bool(buf[payload + 12] & 1), None)
            return
        super()._method(channel, buf, pos, stop)

    def _on_method(self, channel: int, value: Frame) -> bool:
        if isinstance(value, commands.Connection.Close):  # on channel 0; `_wire` answered it
            self.ready = False
            self._fail_all(AMQPConnectionError(value.reply_code, value.reply_text))
            return False  # also for a request waiting on the connection
        if channel != self.channel or not self.ready:
            # A request (open, select) is waiting for it, or a closed channel's leftovers.
            return isinstance(value, commands.Basic.Ack | commands.Basic.Nack)
        if isinstance(value, commands.Basic.Nack):
            nacked = Nacked("the broker nacked the publish")
            self._settle(value.delivery_tag, value.multiple, nacked)
            return True
        if isinstance(value, commands.Basic.Return):
            self.expect_content(lambda raw, body: self._returned(value, raw, body))
            return True
        if isinstance(value, commands.Channel.Close):
            # `_wire` has answered it.
            self.ready = False
            self._fail_all(channel_error(value))
            return True
        return isinstance(value, commands.Connection.Blocked | commands.Connection.Unblocked)

    def _settle(self, tag: int, multiple: bool, error: Exception | None) -> None:
        pending = self._pending
        if multiple:
            tags: Sequence[int] = range(self._oldest, tag + 1)
        else:
            tags = (tag,)
        for each in tags:
            entry = pending.pop(each, None)
            if entry is not None and not entry[0].done():
                if error is None:
                    entry[0].set_result(None)
                else:
                    entry[0].set_exception(error)
        while self._oldest < self._next_tag and self._oldest not in pending:
            self._oldest += 1

    def _returned(self, value: commands.Basic.Return, raw_header: bytes, body: bytes) -> None:
        # Returns come before the ack of the same message: fail the oldest pending
        # publish of the same route, id and body (two such are interchangeable).
        _, _, content = frame.unmarshal(raw_header)
        assert isinstance(content, header.ContentHeader)
        message_id = content.properties.message_id
        for tag, (future, exchange, key, sent_id, sent_body) in self._pending.items():
            if exchange != value.exchange or key != value.routing_key:
                continue
            if sent_id == message_id and sent_body == body:
                del self._pending[tag]
                if not future.done():
                    future.set_exception(
                        Returned(f"{value.reply_code} {value.reply_text}: nothing bound to take it")
                    )
                return

    def _fail_all(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future, *_ in pending.values():
            if not future.done():
                future.set_exception(error)
        self._oldest = self._next_tag

    def _lost(self, exc: Exception | None) -> None:
        self.ready = False
        super()._lost(exc)
        self._fail_all(AMQPConnectionError(f"publishing connection lost: {exc or 'closed'}"))
