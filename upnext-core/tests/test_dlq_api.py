"""`worker.dlq`: entries decoded from backend records, paging, limits, refusals."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import upnext
from upnext import _discovery
from upnext._discovery import register
from upnext._dlq import DeadLetterEntry
from upnext._result import ErrorInfo
from upnext._serializer import AttemptRecord, DeadLetterData, JobBody, decode_body
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import DeadLetter, DeadLetterRecord, Envelope
from upnext.errors import DeadLetterNotFound, UnsupportedOperation

ERROR = ErrorInfo(type="ValueError", message="boom", traceback="Traceback ...")


class NoDeadLetters(MemoryBroker):
    """A memory broker that declares no dead-letter access."""

    capabilities = replace(MemoryBroker.capabilities, dlq_access=None)


def _body(job_id: str = "j1") -> JobBody:
    history = [
        AttemptRecord(number=1, outcome="error", worker="w1", started=1.0, finished=2.0),
        AttemptRecord(number=2, outcome="timeout", worker="w2", started=3.0, finished=4.0),
    ]
    return JobBody(
        id=job_id,
        fn="mod.charge",
        queue="billing",
        args=[1],
        kwargs={"amount": 5},
        attempts=2,
        history=history,
        parent_id="p1",
        root_id="r1",
        replay_of="old",
    )


def _record(
    data: bytes, entry_id: str = "e1", failed_at: float = 1_700_000_000.5
) -> DeadLetterRecord:
    return DeadLetterRecord(
        entry_id, "j1", "billing", "mod.charge", "retries exhausted", failed_at, data
    )


async def _dead_letter(broker: MemoryBroker, record: DeadLetterRecord) -> None:
    """Put `record` in the broker's DLQ the way a worker does: receive, then settle."""
    await broker.enqueue_many([Envelope(record.job_id, record.queue, b"{}")])
    (delivery,) = await broker.receive([record.queue], limit=1, lease=30.0, wait=0.0)
    assert await broker.settle([DeadLetter(delivery, record)]) == [None]


def test_entry_from_a_core_record() -> None:
    data = DeadLetterData(reason="retries exhausted", error=ERROR, body=_body())
    entry = DeadLetterEntry.from_record(_record(data.model_dump_json().encode()))
    assert (entry.id, entry.job_id, entry.queue, entry.function) == (
        "e1",
        "j1",
        "billing",
        "mod.charge",
    )
    assert entry.reason == "retries exhausted"
    assert entry.payload is not None
    assert (entry.payload.args, entry.payload.kwargs) == ([1], {"amount": 5})
    assert entry.error == ERROR
    assert [(a.number, a.outcome) for a in entry.attempts] == [(1, "error"), (2, "timeout")]
    assert entry.failed_at == datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)
    assert (entry.parent_id, entry.root_id, entry.replay_of) == ("p1", "r1", "old")
    assert entry.raw is None
    assert entry.replayable


def test_entry_from_raw_undecodable_bytes() -> None:
    data = DeadLetterData.for_raw("undecodable", ERROR, b"\x00not a job")
    entry = DeadLetterEntry.from_record(_record(data.model_dump_json().encode()))
    assert entry.payload is None
    assert entry.attempts == []
    assert entry.raw is not None
    assert base64.b64decode(entry.raw) == b"\x00not a job"
    assert (entry.parent_id, entry.root_id, entry.replay_of) == (None, None, None)
    assert not entry.replayable


def test_entry_serializes_to_json() -> None:
    data = DeadLetterData(reason="rejected", error=None, body=_body())
    entry = DeadLetterEntry.from_record(_record(data.model_dump_json().encode()))
    assert DeadLetterEntry.model_validate_json(entry.model_dump_json()) == entry


def test_entry_from_a_bare_job_body() -> None:
    # RabbitMQ's broker-side dead letters carry the job body, not core's entry.
    entry = DeadLetterEntry.from_record(_record(_body().model_dump_json().encode()))
    assert (entry.job_id, entry.reason, entry.error) == ("j1", "retries exhausted", None)
    assert entry.payload is not None
    assert (entry.payload.args, entry.payload.kwargs) == ([1], {"amount": 5})
    assert [a.number for a in entry.attempts] == [1, 2]
    assert entry.replayable


def test_entry_from_bytes_core_did_not_write() -> None:
    entry = DeadLetterEntry.from_record(_record(b"\xff garbage"))
    assert (entry.job_id, entry.reason, entry.payload) == ("j1", "retries exhausted", None)
    assert entry.raw is not None
    assert base64.b64decode(entry.raw) == b"\xff garbage"
    assert not entry.replayable


async def test_one_foreign_entry_does_not_break_the_page() -> None:
    url = f"memory://dlq-{uuid.uuid4().hex}"
    worker = upnext.Worker("dlq-api", broker=url)
    good = DeadLetterData(reason="rejected", body=_body("j0")).model_dump_json().encode()
    await _dead_letter(MemoryBroker.from_url(url), replace(_record(good, "e0"), job_id="j0"))
    await _dead_letter(MemoryBroker.from_url(url), _record(b"not json", "e1", 2e9))
    page = await worker.dlq.list()
    assert [(e.id, e.replayable) for e in page.items] == [("e1", False), ("e0", True)]
    with pytest.raises(UnsupportedOperation):
        await worker.dlq.replay("e1")
    await worker.aclose()


@pytest.mark.parametrize("limit", [0, -1, 501])
async def test_list_limit_outside_one_to_five_hundred(limit: int) -> None:
    worker = upnext.Worker("dlq-api", broker=f"memory://dlq-{uuid.uuid4().hex}")
    with pytest.raises(ValueError, match="limit must be between 1 and 500") as info:
        await worker.dlq.list(limit=limit)
    assert str(info.value) == f"limit must be between 1 and 500, got {limit}"


@pytest.mark.parametrize("limit", [1, 500])
async def test_list_limit_bounds_are_accepted(limit: int) -> None:
    worker = upnext.Worker("dlq-api", broker=f"memory://dlq-{uuid.uuid4().hex}")
    page = await worker.dlq.list(limit=limit)
    assert (page.items, page.next_cursor) == ([], None)
    await worker.aclose()


async def test_list_pages_newest_first_and_filters() -> None:
    url = f"memory://dlq-{uuid.uuid4().hex}"
    broker = MemoryBroker.from_url(url)
    worker = upnext.Worker("dlq-api", broker=url)
    for n in range(3):
        body = _body(f"j{n}")
        data = DeadLetterData(reason="rejected", body=body).model_dump_json().encode()
        record = replace(_record(data, f"e{n}", 1000.0 + n), job_id=body.id)
        await _dead_letter(broker, record)
    first = await worker.dlq.list(limit=2)
    assert [e.id for e in first.items] == ["e2", "e1"]
    assert first.next_cursor is not None
    second = await worker.dlq.list(limit=2, cursor=first.next_cursor)
    assert [e.id for e in second.items] == ["e0"]
    assert second.next_cursor is None
    assert (await worker.dlq.list(queue="other")).items == []
    assert len((await worker.dlq.list(function="mod.charge")).items) == 3
    assert await worker.dlq.count() == await worker.dlq.count("billing") == 3
    await worker.aclose()


async def test_get_delete_purge() -> None:
    url = f"memory://dlq-{uuid.uuid4().hex}"
    worker = upnext.Worker("dlq-api", broker=url)
    for n in range(3):
        data = DeadLetterData(reason="rejected", body=_body(f"j{n}")).model_dump_json().encode()
        await _dead_letter(
            MemoryBroker.from_url(url), replace(_record(data, f"e{n}"), job_id=f"j{n}")
        )
    assert (await worker.dlq.get("e1")).job_id == "j1"
    await worker.dlq.delete("e1")
    with pytest.raises(DeadLetterNotFound):
        await worker.dlq.get("e1")
    with pytest.raises(DeadLetterNotFound):
        await worker.dlq.delete("e1")
    assert await worker.dlq.purge("other") == 0
    assert await worker.dlq.purge() == 2
    assert await worker.dlq.count() == 0
    await worker.aclose()


async def test_replay_of_a_raw_entry_is_refused_and_keeps_it() -> None:
    url = f"memory://dlq-{uuid.uuid4().hex}"
    worker = upnext.Worker("dlq-api", broker=url)
    data = DeadLetterData.for_raw("undecodable", ERROR, b"junk").model_dump_json().encode()
    await _dead_letter(MemoryBroker.from_url(url), _record(data))
    with pytest.raises(UnsupportedOperation, match="can't be replayed"):
        await worker.dlq.replay("e1")
    assert (await worker.dlq.get("e1")).raw is not None
    assert MemoryBroker.from_url(url).pending() == 0
    await worker.aclose()


async def test_replay_enqueues_a_new_job_with_lineage() -> None:
    url = f"memory://dlq-{uuid.uuid4().hex}"
    broker = MemoryBroker.from_url(url)
    worker = upnext.Worker("dlq-api", broker=url)
    data = DeadLetterData(reason="rejected", body=_body()).model_dump_json().encode()
    await _dead_letter(broker, _record(data))
    new_id = await worker.dlq.replay("e1")
    assert new_id != "j1"
    (delivery,) = await broker.receive(["billing"], limit=1, lease=30.0, wait=0.0)
    body = decode_body(delivery.envelope.body, worker.max_payload)
    assert (body.id, body.fn, body.queue, body.replay_of) == (new_id, "mod.charge", "billing", "j1")
    assert (body.args, body.kwargs, body.attempts, body.history) == ([1], {"amount": 5}, 0, [])
    assert (body.parent_id, body.root_id) == ("p1", "r1")
    with pytest.raises(DeadLetterNotFound):
        await worker.dlq.replay("e1")
    await worker.aclose()


async def test_a_replayed_job_has_no_deadline() -> None:
    """An `expired` entry replayed runs whenever it is picked up: its old deadline is gone."""
    url = f"memory://dlq-{uuid.uuid4().hex}"
    broker = MemoryBroker.from_url(url)
    worker = upnext.Worker("dlq-api", broker=url)
    expired = _body().model_copy(update={"attempts": 0, "history": [], "expires_at": 1.0})
    data = DeadLetterData(reason="expired", body=expired).to_json()
    await _dead_letter(broker, _record(data))
    await worker.dlq.replay("e1")
    (delivery,) = await broker.receive(["billing"], limit=1, lease=30.0, wait=0.0)
    assert decode_body(delivery.envelope.body, worker.max_payload).expires_at is None
    await worker.aclose()


async def test_broker_without_dead_letter_access(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_discovery, "_REGISTERED", dict(_discovery._REGISTERED))
    register("nodlq", f"{__name__}:NoDeadLetters")
    worker = upnext.Worker("dlq-api", broker="nodlq://x")
    with pytest.raises(UnsupportedOperation) as info:
        await worker.dlq.list()
    assert str(info.value) == "nodlq://x offers no dead-letter access"
    with pytest.raises(UnsupportedOperation):
        await worker.dlq.count()
    await worker.aclose()
