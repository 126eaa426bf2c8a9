"""Errors at the boundary: unreachable servers, passwords, memory limits and eviction."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from redis import exceptions as rx
from upnext.broker.protocol import Envelope
from upnext.errors import BrokerError, BrokerUnavailable
from upnext_redis import RedisBroker
from upnext_redis._errors import ErrorMapper

Server = Callable[..., AbstractContextManager[int]]


async def test_unreachable_server_is_unavailable_without_password(
    free_port: Callable[[], int],
) -> None:
    """A closed port gives BrokerUnavailable whose text and repr never show the password."""
    broker = RedisBroker.from_url(f"redis://:secret@127.0.0.1:{free_port()}/0?retries=1")
    try:
        with pytest.raises(BrokerUnavailable) as info:
            await broker.connect()
        with pytest.raises(BrokerUnavailable) as on_enqueue:
            await broker.enqueue_many([Envelope("j", "q", b"x")])
    finally:
        await broker.aclose()
    for exc in (info.value, on_enqueue.value):
        assert "secret" not in str(exc)
        assert "secret" not in repr(exc)
        assert exc.__suppress_context__
    assert "secret" not in repr(broker)
    assert "127.0.0.1" in str(info.value)


async def test_wrong_password_is_unavailable_without_password(private_redis: Server) -> None:
    """A refused AUTH names the server, never the password that was tried."""
    with private_redis("--requirepass", "right-one") as port:
        broker = RedisBroker.from_url(f"redis://:wrong-one@127.0.0.1:{port}/0?retries=0")
        try:
            with pytest.raises(BrokerUnavailable) as info:
                await broker.connect()
        finally:
            await broker.aclose()
    assert "wrong-one" not in str(info.value)
    assert "right-one" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "driver_error", "secret"),
    [
        ("redis://h:1/0", rx.ConnectionError("to redis://:s3cret-canary@h:1/0"), "s3cret-canary"),
        ("redis://:s3cret-canary@h:1/0", rx.AuthenticationError("AUTH s3cret-canary"), "canary"),
        ("redis://u:Can%40ary%2F5ecret@h/0", rx.ResponseError("NO Can@ary/5ecret"), "5ecret"),
    ],
)
def test_a_driver_error_echoing_the_password_hides_it(
    url: str, driver_error: Exception, secret: str
) -> None:
    """Core's `redact` cleans the driver's words: a URL's password, raw or percent-decoded."""
    with pytest.raises(BrokerError) as info, ErrorMapper(url).boundary():
        raise driver_error
    assert secret not in "".join(traceback.format_exception(info.value))
    assert "***" in str(info.value)


async def test_evicting_policy_is_warned_about(
    private_redis: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """An allkeys-* policy could evict queued jobs: connect logs a warning."""
    with private_redis("--maxmemory-policy", "allkeys-lru") as port:
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{port}/0")
        with caplog.at_level(logging.WARNING, logger="upnext.redis"):
            await broker.connect()
        await broker.aclose()
    assert any("allkeys-lru" in r.getMessage() for r in caplog.records)


async def test_strict_refuses_an_evicting_policy(private_redis: Server) -> None:
    """With strict=true a volatile-* policy makes connect fail."""
    with private_redis("--maxmemory-policy", "volatile-ttl") as port:
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{port}/0?strict=true")
        try:
            with pytest.raises(BrokerError, match="volatile-ttl"):
                await broker.connect()
        finally:
            await broker.aclose()


async def test_noeviction_policy_is_silent(
    private_redis: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """noeviction is what a queue needs: no warning."""
    with private_redis("--maxmemory-policy", "noeviction") as port:
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{port}/0?strict=true")
        with caplog.at_level(logging.WARNING, logger="upnext.redis"):
            await broker.connect()
        await broker.aclose()
    assert not caplog.records


async def _fill(broker: RedisBroker) -> None:
    for i in range(100):
        await broker.enqueue_many([Envelope(f"b{i}-{j}", "q", b"x" * 65536) for j in range(8)])


async def test_full_redis_refuses_enqueue_with_broker_error(private_redis: Server) -> None:
    """Under noeviction a full Redis gives BrokerError and stores no part of the batch."""
    with private_redis("--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as port:
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{port}/0")
        await broker.connect()
        try:
            with pytest.raises(BrokerError, match="out of memory") as info:
                await _fill(broker)
            assert not isinstance(info.value, BrokerUnavailable)
            stats = await broker.stats("q")
            assert stats.ready is not None
            assert stats.ready > 0
            assert stats.ready % 8 == 0, "a batch is stored whole or not at all"
        finally:
            await broker.aclose()
