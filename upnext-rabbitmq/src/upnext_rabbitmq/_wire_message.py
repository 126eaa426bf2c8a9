"""One delivery read by the lean connection (`_wire`), its properties decoded on demand.

A consumer needs a delivery's message-id and priority every time and its
headers rarely: those two are read straight out of the raw content header,
past the properties before them, and the full decode (pamqp) runs only for a
message with headers.
Anyone can publish to a work queue: a property that is not UTF-8 must not
stop a delivery from being handed out (and dead-lettered, if it is no job),
so the id is decoded with replacement characters, and properties pamqp
cannot decode read as none but that id.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any

from pamqp import commands, frame, header
from pamqp.exceptions import UnmarshalingException
from upnext.broker.protocol import Envelope

__all__ = ["WireMessage"]

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
# Content header property flags, and the properties before message-id in wire order.
_HAS_HEADERS, _HAS_PRIORITY, _HAS_MESSAGE_ID = 0x2000, 0x0800, 0x0080
_BEFORE_MESSAGE_ID = (
    (0x8000, "short"),  # content-type
    (0x4000, "short"),  # content-encoding
    (0x2000, "table"),  # headers
    (0x1000, "octet"),  # delivery-mode
    (0x0800, "octet"),  # priority
    (0x0400, "short"),  # correlation-id
    (0x0200, "short"),  # reply-to
    (0x0100, "short"),  # expiration
)


@dataclass(slots=True)
class WireMessage:
    """One delivery: its tag and body, with the raw content header for the rest."""

    delivery_tag: int
    body: bytes
    raw_header: bytes
    redelivered: bool = False

    @property
    def properties(self) -> commands.Basic.Properties:
        """The message's properties, decoded now (most scans never need them)."""
        try:
            _, _, value = frame.unmarshal(self.raw_header)
        except UnmarshalingException:
            return commands.Basic.Properties(message_id=self.message_id)
        assert isinstance(value, header.ContentHeader)
        return value.properties

    @property
    def message_id(self) -> str | None:
        """The message-id property, read without decoding the others."""
        raw = self.raw_header
        pos = _find(raw, _HAS_MESSAGE_ID)
        if pos is None:
            return None
        return raw[pos + 1 : pos + 1 + raw[pos]].decode(errors="replace")

    @property
    def priority(self) -> int:
        """The priority property (0 without one), read without decoding the others."""
        pos = _find(self.raw_header, _HAS_PRIORITY)
        return 0 if pos is None else self.raw_header[pos]

    def envelope(self, queue: str) -> Envelope:
        """This message as a job of `queue` (a message without an id gets a fresh one)."""
        job_id = self.message_id or uuid.uuid4().hex
        return Envelope(job_id, queue, self.body, 0.0, self.priority)

    @property
    def headers(self) -> dict[str, Any]:
        """The headers table ({} without one; decoded only if there is one)."""
        (flags,) = _U16.unpack_from(self.raw_header, 19)
        if not flags & _HAS_HEADERS:
            return {}
        return dict(self.properties.headers or {})


def _find(raw: bytes, wanted: int) -> int | None:
    """Where the property of flag `wanted` starts in `raw`, or None if it is absent."""
    (flags,) = _U16.unpack_from(raw, 19)
    if not flags & wanted:
        return None
    pos = 21
    for bit, kind in _BEFORE_MESSAGE_ID:
        if bit <= wanted:
            break
        if flags & bit:
            if kind == "short":
                pos += 1 + raw[pos]
            elif kind == "table":
                pos += 4 + _U32.unpack_from(raw, pos)[0]
            else:
                pos += 1
    return pos
