"""Delays through the ladder, and mandatory publishes that come back returned."""

from __future__ import annotations

import time
from typing import Any

import aio_pika
import pytest
from upnext.broker.protocol import Ack, Delivery, Envelope, Retry
from upnext.errors import BrokerError
from upnext_rabbitmq import RabbitBroker, topology


async def _receive_one(broker: RabbitBroker, queue: str, within: float) -> Delivery:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await broker.receive([queue], limit=1, lease=30, wait=deadline - time.monotonic())
        if got:
            return got[0]
    pytest.fail(f"nothing arrived on {queue} within {within} s")


async def test_short_retry_never_waits_behind_a_long_one(
    broker: RabbitBroker, upnext_queue: str
) -> None:
    """A 1 s retry published after a 30 s one arrives at ~1 s (+0.5 s), not behind it."""
    await broker.enqueue_many(
        [Envelope("long", upnext_queue, b"a"), Envelope("short", upnext_queue, b"b")]
    )
    first = await _receive_one(broker, upnext_queue, 5)
    second = await _receive_one(broker, upnext_queue, 5)
    by_id = {d.envelope.id: d for d in (first, second)}
    assert await broker.settle([Retry(by_id["long"], b"long-2", 30.0)]) == [None]
    started = time.monotonic()
    assert await broker.settle([Retry(by_id["short"], b"short-2", 1.0)]) == [None]
    got = await _receive_one(broker, upnext_queue, 3)
    elapsed = time.monotonic() - started
    assert got.envelope.body == b"short-2"
    assert 1.0 - 0.01 <= elapsed <= 1.5, f"a 1 s retry arrived after {elapsed:.3f} s"
    await broker.settle([Ack(got)])


async def test_mixed_delays_arrive_in_due_order(broker: RabbitBroker, upnext_queue: str) -> None:
    """Delays of 1.25, 0.25, 0.75 and 0.5 s come out in due order, each on time."""
    delays = {"d125": 1.25, "d025": 0.25, "d075": 0.75, "d050": 0.5}
    started = time.monotonic()
    await broker.enqueue_many([Envelope(k, upnext_queue, k.encode(), v) for k, v in delays.items()])
    arrivals: list[tuple[str, float]] = []
    for _ in delays:
        got = await _receive_one(broker, upnext_queue, 3)
        arrivals.append((got.envelope.id, time.monotonic() - started))
        await broker.settle([Ack(got)])
    assert [k for k, _ in arrivals] == sorted(delays, key=lambda k: delays[k])
    for job_id, at in arrivals:
        assert delays[job_id] - 0.01 <= at <= delays[job_id] + 0.5, (job_id, at)


async def _delete(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()


async def test_deleted_delay_queue_is_redeclared_not_lost(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str
) -> None:
    """A delay level deleted by hand: the publish is returned, re-declared, re-published."""
    # 0.5 s is level 1 alone: deleting that queue unbinds the only route.
    await broker._ensure_levels(upnext_queue)
    await _delete(amqp_url, topology.level_queue(upnext_queue, 1))
    await broker.enqueue_many([Envelope("j", upnext_queue, b"delayed", 0.5)])
    got = await _receive_one(broker, upnext_queue, 3)
    assert got.envelope.body == b"delayed"
    await broker.settle([Ack(got)])


async def test_deleted_delay_exchange_is_redeclared_not_lost(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str
) -> None:
    """A delay exchange deleted by hand (404 closes the channel): re-declared, re-published."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(topology.level_exchange(2))
    finally:
        await connection.close()
    jobs = [Envelope(f"j{i}", upnext_queue, b"delayed", 1.0) for i in range(3)]
    await broker.enqueue_many([Envelope("now", upnext_queue, b"now"), *jobs])
    # Publishes in flight on the closed channel are sent again: at least once.
    seen: set[str] = set()
    deadline = time.monotonic() + 4
    while seen < {"j0", "j1", "j2", "now"} and time.monotonic() < deadline:
        got = await broker.receive([upnext_queue], limit=10, lease=30, wait=0.5)
        seen |= {d.envelope.id for d in got}
        await broker.settle([Ack(d) for d in got])
    assert seen == {"j0", "j1", "j2", "now"}


async def test_deleted_work_queue_is_redeclared_not_lost(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str
) -> None:
    """Enqueueing to a work queue deleted under a running broker re-creates it."""
    await broker.enqueue_many([Envelope("first", upnext_queue, b"1")])
    await _delete(amqp_url, topology.work_queue(upnext_queue))
    await broker.enqueue_many([Envelope("second", upnext_queue, b"2")])
    got = await _receive_one(broker, upnext_queue, 3)
    assert got.envelope.id == "second"
    await broker.settle([Ack(got)])


async def test_a_message_returned_twice_is_an_error(
    broker: RabbitBroker, upnext_queue: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If re-declaring does not help, the publish fails loudly instead of vanishing."""
    await broker.enqueue_many([Envelope("first", upnext_queue, b"1")])
    await _delete(amqp_url, topology.work_queue(upnext_queue))

    async def no_redeclare(needs: set[str | None]) -> None:
        return None

    publisher = broker._pub()
    monkeypatch.setattr(publisher, "_redeclare", no_redeclare)
    with pytest.raises(BrokerError, match="unroutable"):
        await broker.enqueue_many([Envelope("lost?", upnext_queue, b"2")])


async def test_a_refused_settle_publish_raises_and_keeps_that_job_held(
    broker: RabbitBroker, upnext_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If one item's publish fails, the others are acked, BrokerError is raised, it stays held."""
    await broker.enqueue_many([Envelope(f"j{i}", upnext_queue, b"x") for i in range(2)])
    first = await _receive_one(broker, upnext_queue, 5)
    second = await _receive_one(broker, upnext_queue, 5)
    publisher = broker._pub()
    real = publisher.publish

    async def refuse_retries(messages: list[Any]) -> list[BrokerError | None]:
        out = await real([m for m in messages if m.body != b"refused"])
        return [BrokerError("refused") if m.body == b"refused" else out.pop(0) for m in messages]

    monkeypatch.setattr(publisher, "publish", refuse_retries)
    with pytest.raises(BrokerError, match="refused"):
        await broker.settle([Ack(first), Retry(second, b"refused", 0.0)])
    monkeypatch.undo()
    assert not broker._cons().live(first.receipt)
    assert broker._cons().live(second.receipt)
    assert await broker.settle([Retry(second, b"accepted", 0.0)]) == [None]
    again = await _receive_one(broker, upnext_queue, 5)
    assert again.envelope.body == b"accepted"
    await broker.settle([Ack(again)])
