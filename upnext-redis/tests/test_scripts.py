"""The Lua scripts' own checks, which the Python side normally makes unreachable."""

from __future__ import annotations

import pytest
from upnext.broker.protocol import Ack, Envelope, ResultWrite, Retry
from upnext.errors import BrokerError
from upnext_redis import RedisBroker, broker


async def test_settle_checks_every_number_before_its_first_write(
    redis_broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An out-of-range TTL in the middle of a batch fails the script with nothing applied."""
    await redis_broker.enqueue_many([Envelope(f"j{i}", "q", b"x") for i in range(3)])
    held = await redis_broker.receive(["q"], limit=3, lease=30.0, wait=1.0)
    monkeypatch.setattr(broker, "ttl_ms", lambda ttl: 10**303 if ttl > 100 else 60_000)

    def ack(i: int, ttl: float) -> Ack:
        return Ack(held[i], ResultWrite(f"j{i}", "q", b"done", ttl))

    with pytest.raises(BrokerError):
        await redis_broker.settle([ack(0, 60.0), ack(1, 1e300), Retry(held[2], b"y", 0.0)])
    monkeypatch.undo()
    outcomes = await redis_broker.settle([ack(0, 60.0), ack(1, 60.0), Retry(held[2], b"y", 0.0)])
    assert outcomes == [None, None, None]  # every job was still held: nothing had applied
    assert await redis_broker.get_result("j1", queue="q", wait=0) == b"done"
