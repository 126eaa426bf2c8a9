"""Properties read straight from a raw content header, checked against pamqp (no server)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pamqp import commands, frame, header
from upnext_rabbitmq._wire_message import WireMessage

# Every property that comes before message-id on the wire, in its own shape.
_BEFORE: dict[str, Any] = {
    "content_type": "application/json",
    "content_encoding": "gzip",
    "headers": {"x-upnext-handed-out": 2, "nested": {"a": [1, "b"]}},
    "delivery_mode": 2,
    "priority": 7,
    "correlation_id": "c-1",
    "reply_to": "upnext.reply.x",
    "expiration": "250",
}


def _message(**properties: Any) -> WireMessage:
    raw = frame.marshal(header.ContentHeader(0, 3, commands.Basic.Properties(**properties)), 1)
    return WireMessage(1, b"abc", raw)


@pytest.mark.parametrize("present", list(itertools.product([False, True], repeat=len(_BEFORE))))
def test_message_id_is_read_past_any_properties_before_it(present: tuple[bool, ...]) -> None:
    pairs = zip(_BEFORE.items(), present, strict=True)
    chosen = {name: value for (name, value), keep in pairs if keep}
    message = _message(message_id="job-é-1", timestamp=None, app_id="after", **chosen)
    assert message.message_id == "job-é-1"
    assert message.headers == (message.properties.headers or {})
    assert message.priority == chosen.get("priority", 0)
    assert message.envelope("q").priority == message.priority


def test_no_message_id_and_no_headers() -> None:
    message = _message(delivery_mode=2)
    assert message.message_id is None
    assert message.headers == {}
    assert message.priority == 0


def test_priority_without_a_message_id() -> None:
    message = _message(content_type="x", headers={"a": 1}, delivery_mode=2, priority=9)
    assert message.message_id is None
    assert message.priority == 9
    envelope = message.envelope("q")
    assert (envelope.queue, envelope.body, envelope.priority) == ("q", b"abc", 9)
    assert envelope.id, "a message without an id gets a fresh one"
