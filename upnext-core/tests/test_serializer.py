"""The wire format: bodies, versions, size limits and one-line decode errors."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence

import pytest
import upnext
import upnext.broker
from upnext import _discovery
from upnext._result import ErrorInfo
from upnext._serializer import (
    FORMAT_VERSION,
    AttemptRecord,
    DeadLetterData,
    JobBody,
    ResultRecord,
    UndecodableBody,
    check_size,
    decode_body,
    encode_body,
)
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Envelope
from upnext.errors import PayloadTooLarge, SerializationError

# A memory:// submit with no worker in the process warns; that is not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore:.*no worker runs in this process:RuntimeWarning")


class SpyBroker(MemoryBroker):
    """A real memory broker that records every connect and enqueue."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[str] = []
        self.enqueued: list[Envelope] = []

    async def connect(self) -> None:
        self.calls.append("connect")

    async def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        self.calls.append("enqueue_many")
        self.enqueued.extend(envelopes)
        await super().enqueue_many(envelopes)


_SPIES: dict[str, SpyBroker] = {}


def spy_factory(url: str) -> SpyBroker:
    """The entry point target registered for ``spy://`` in these tests."""
    return _SPIES.setdefault(url, SpyBroker(url))


def _body(**changes: object) -> JobBody:
    return JobBody(id="j1", fn="mod.f", queue="q", args=[1], kwargs={"a": "b"}).model_copy(
        update=changes
    )


def test_body_round_trips() -> None:
    history = [AttemptRecord(number=1, outcome="error", worker="w", error="ValueError: x")]
    body = _body(attempts=1, history=history, parent_id="p", root_id="r")
    data = encode_body(body, 10_000)
    assert json.loads(data)["v"] == FORMAT_VERSION
    assert decode_body(data, 10_000) == body


def test_a_body_without_headers_has_no_headers_key() -> None:
    """No headers: the bytes are those of a body from before the field existed."""
    body = _body()
    assert "headers" not in json.loads(encode_body(body, 10_000))
    assert "headers" not in json.loads(DeadLetterData(reason="r", body=body).to_json())["body"]
    assert decode_body(encode_body(body, 10_000), 10_000).headers is None


def test_a_body_without_a_deadline_has_no_expires_at_key() -> None:
    """No `expires`: the bytes are those of a body from before the field existed."""
    body = _body(headers={"h": "v"})
    assert "expires_at" not in json.loads(encode_body(body, 10_000))
    assert "expires_at" not in json.loads(DeadLetterData(reason="r", body=body).to_json())["body"]
    old = b'{"v":1,"id":"j1","fn":"mod.f","queue":"q"}'  # a body from before the field
    assert decode_body(old, 10_000).expires_at is None


@pytest.mark.parametrize("headers", [None, {"traceparent": "00-ab-cd-01"}])
def test_a_deadline_round_trips_with_or_without_headers(headers: dict[str, str] | None) -> None:
    body = _body(expires_at=1_800_000_000.5, headers=headers)
    data = encode_body(body, 10_000)
    assert json.loads(data)["expires_at"] == 1_800_000_000.5
    assert ("headers" in json.loads(data)) is (headers is not None)
    assert decode_body(data, 10_000) == body
    entry = DeadLetterData(reason="expired", body=body).to_json()
    assert DeadLetterData.model_validate_json(entry).body == body


def test_headers_round_trip_in_bodies_and_dead_letter_entries() -> None:
    body = _body(headers={"traceparent": "00-ab-cd-01"})
    assert decode_body(encode_body(body, 10_000), 10_000) == body
    entry = DeadLetterData(reason="r", body=body).to_json()
    assert DeadLetterData.model_validate_json(entry).body == body


def test_check_size_at_the_limit() -> None:
    assert check_size(b"x" * 10, 10, "it") == b"x" * 10
    with pytest.raises(PayloadTooLarge) as info:
        check_size(b"x" * 11, 10, "it")
    assert str(info.value) == "it is 11 bytes, over the 10-byte max_payload"


def test_encode_body_over_the_limit() -> None:
    body = _body(kwargs={"blob": "x" * 500})
    with pytest.raises(PayloadTooLarge) as info:
        encode_body(body, 100)
    assert "job j1 (mod.f)" in str(info.value)
    assert isinstance(info.value, SerializationError)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "undecodable"),
        (b'{"v": 1, "fn": "f", "queue": "q"}', "undecodable"),
        (b'{"v": 2, "id": "j", "fn": "f", "queue": "q"}', "unknown format version"),
        (b'{"v": 99, "whatever": true}', "unknown format version"),
        (b"[]", "undecodable"),
    ],
)
def test_decode_body_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableBody) as info:
        decode_body(data, 10_000)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{reason}: ")
    assert "\n" not in str(info.value)


def test_decode_names_the_missing_field() -> None:
    with pytest.raises(UndecodableBody) as info:
        decode_body(b'{"v": 1, "fn": "f", "queue": "q"}', 10_000)
    assert info.value.detail == "id: Field required"


def test_decode_body_over_the_limit() -> None:
    data = encode_body(_body(), 10_000)
    with pytest.raises(UndecodableBody) as info:
        decode_body(data, len(data) - 1)
    assert info.value.reason == "payload too large"


def test_dead_letter_data_for_raw_bytes() -> None:
    error = ErrorInfo(type="UndecodableBody", message="undecodable")
    data = DeadLetterData.for_raw("undecodable", error, b"\xff\x00garbage")
    back = DeadLetterData.model_validate_json(data.model_dump_json())
    assert back.body is None
    assert back.raw is not None
    assert base64.b64decode(back.raw) == b"\xff\x00garbage"


def test_result_record_is_compact() -> None:
    record = ResultRecord(s="complete", v={"a": 1}, fn="mod.f", at=1)
    assert json.loads(record.model_dump_json())["s"] == "complete"
    assert ResultRecord.model_validate_json(record.model_dump_json()) == record


async def test_payload_too_large_at_submit_before_any_io(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_discovery, "_REGISTERED", dict(_discovery._REGISTERED))
    upnext.broker.register("spy", f"{__name__}:spy_factory")
    url = f"spy://payload-{uuid.uuid4().hex}"
    worker = upnext.Worker("payload", broker=url, max_payload=1000)

    @worker.task
    async def store(blob: str) -> None: ...

    with pytest.raises(PayloadTooLarge) as info:
        await store.submit(blob="x" * 2000)
    assert "1000-byte max_payload" in str(info.value)
    assert "\n" not in str(info.value)
    spy = _SPIES.get(url)
    assert spy is None or spy.calls == []  # not even a connect
    await store.submit(blob="small")  # the spy does see a submit that fits
    assert _SPIES[url].calls == ["connect", "enqueue_many"]
    assert len(_SPIES[url].enqueued) == 1
    await worker.aclose()
