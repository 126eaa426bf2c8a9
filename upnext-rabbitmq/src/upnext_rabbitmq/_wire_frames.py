"""Reading AMQP 0-9-1 frames off a socket, for the lean connections of `_wire`.

`FrameReader` is the transport's protocol: it cuts whole frames out of each
chunk the socket hands over (no read call or object per frame), passes method
frames to its connection, and reassembles the content (header and body
frames) that follows a method into one callback. Also here: the exception a
closed channel maps to, and TLS settings from a URL's query.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiormq.exceptions import ChannelAccessRefused, ChannelClosed, ChannelNotFoundEntity
from pamqp import commands

if TYPE_CHECKING:
    from upnext_rabbitmq._wire import WireConnection

__all__ = ["U64", "ContentSink", "FrameReader", "channel_error", "tls_context"]

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
HEAD = struct.Struct(">BHI")
U64 = struct.Struct(">Q")

# Called with a content's raw header frame and its body once both are read.
ContentSink = Callable[[bytes, bytes], None]


class FrameReader(asyncio.Protocol):
    """Frames from the socket to one connection; content to whoever expects it."""

    def __init__(self, owner: WireConnection) -> None:
        self._owner = owner
        self._buffer = bytearray()
        # Where the content being read goes, and its parts so far.
        self._sink: ContentSink | None = None
        self._raw_header = b""
        self._parts: list[bytes] = []
        self._left = 0

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos = 0
        end = len(buf)
        self._owner.heard = True
        while end - pos >= 7:
            kind, channel, size = HEAD.unpack_from(buf, pos)
            stop = pos + 7 + size
            if stop >= end:
                break
            self._frame(kind, channel, buf, pos, stop)
            pos = stop + 1
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(exc)

    def expect_content(self, sink: ContentSink) -> None:
        """Send the content (header and body) that follows the last method to `sink`."""
        self._sink = sink

    def _frame(self, kind: int, channel: int, buf: bytearray, pos: int, stop: int) -> None:
        payload = pos + 7
        if kind == FRAME_METHOD:
            self._owner._method(channel, buf, pos, stop)
        elif kind == FRAME_HEADER and self._sink is not None:
            self._raw_header = bytes(buf[pos : stop + 1])
            (self._left,) = U64.unpack_from(buf, payload + 4)
            self._parts = []
            if not self._left:
                self._content_read()
        elif kind == FRAME_BODY and self._sink is not None:
            self._parts.append(bytes(buf[payload:stop]))
            self._left -= stop - payload
            if self._left <= 0:
                self._content_read()
        # Heartbeats and anything else: nothing to do.

    def _content_read(self) -> None:
        sink = self._sink
        assert sink is not None
        self._sink = None
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        sink(self._raw_header, body)


def channel_error(close: commands.Channel.Close) -> Exception:
    """aiormq's exception for a channel the server closed."""
    text = close.reply_text
    if close.reply_code == 403:
        return ChannelAccessRefused(text)
    if close.reply_code == 404:
        return ChannelNotFoundEntity(text)
    return ChannelClosed(close.reply_code, text)


def tls_context(query: dict[str, Any]) -> ssl.SSLContext:
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
