"""URL options, capabilities, entry points and error messages."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points

import aiormq.exceptions as amqp_errors
import pytest
import upnext
from upnext.broker.optional import JobBrowser
from upnext.broker.protocol import Broker, DeadLetterAdmin, QueueAdmin, ResultStore
from upnext.errors import BrokerError, BrokerUnavailable, ConfigurationError, UnsupportedOperation
from upnext_rabbitmq import RabbitBroker
from upnext_rabbitmq._errors import map_errors
from upnext_rabbitmq._options import parse_url


def test_options_are_split_from_the_amqp_url() -> None:
    """upnext's options are parsed; aio-pika's stay in the URL it gets."""
    opts = parse_url("amqp://u:p@h:5672/v?prefetch=40&heartbeat=30&consumer_timeout=3600")
    assert (opts.prefetch, opts.consumer_timeout) == (40, 3600.0)
    assert opts.amqp_url == "amqp://u:p@h:5672/v?heartbeat=30&reconnect_interval=1"
    assert parse_url("amqps://h/").queue_type == "classic"


def test_reconnect_and_heartbeat_defaults_unless_given() -> None:
    """Reconnect every 1 s, heartbeat 3 s on every connection (the lean ones read it too)."""
    default = parse_url("amqp://h/")
    assert default.amqp_url == "amqp://h/?reconnect_interval=1&heartbeat=3"
    assert default.heartbeat == 3
    given = parse_url("amqp://h/?reconnect_interval=7&heartbeat=20")
    assert given.amqp_url == "amqp://h/?reconnect_interval=7&heartbeat=20"
    assert given.heartbeat == 20
    assert parse_url("amqp://h/?heartbeat=0").heartbeat == 0


@pytest.mark.parametrize(
    "url",
    [
        "amqp://h/?prefetch=0",
        "amqp://h/?consumer_timeout=x",
        "amqp://h/?queue_type=lazy",
        "amqp://h/?strict=maybe",
        "amqp://h/?heartbeat=1.5",
        "amqp://h/?heartbeat=",
    ],
)
def test_bad_options_are_configuration_errors(url: str) -> None:
    """A bad option fails when the broker is built, naming the URL."""
    with pytest.raises(ConfigurationError):
        RabbitBroker(url)


def test_capabilities_are_truthful() -> None:
    """No timed leases, no delivery count on classic queues, no cancel, scan DLQ, 250 ms."""
    caps = RabbitBroker("amqp://h/").capabilities
    assert (caps.timed_leases, caps.counts_deliveries, caps.cancel_queued) == (False, False, False)
    assert (caps.dlq_access, caps.delay_quantum) == ("scan", 0.25)
    assert RabbitBroker("amqp://h/?queue_type=quorum").capabilities.counts_deliveries
    broker = RabbitBroker("amqp://h/?consumer_timeout=7200&strict=true")
    assert (broker.capabilities.delivery_limit, broker.capabilities.delivery_limit_strict) == (
        7200.0,
        True,
    )
    assert RabbitBroker("amqp://h/").capabilities.delivery_limit_strict is False
    for protocol in (Broker, ResultStore, DeadLetterAdmin, QueueAdmin):
        assert isinstance(broker, protocol)
    # AMQP reads a queue only by consuming it: no listing of waiting jobs (docs/brokers.md).
    assert not isinstance(broker, JobBrowser)


async def test_cancel_is_unsupported() -> None:
    """cancel() raises UnsupportedOperation (capability cancel_queued=False)."""
    with pytest.raises(UnsupportedOperation):
        await RabbitBroker("amqp://h/").cancel("q", "job")


def test_entry_points_serve_amqp_and_amqps() -> None:
    """Both schemes resolve to RabbitBroker.from_url in both groups."""
    for group in ("upnext.brokers", "upnext.result_stores"):
        mine = [ep for ep in entry_points(group=group) if ep.name in ("amqp", "amqps")]
        found = {ep.name: ep.load() for ep in mine}
        assert found["amqp"] == found["amqps"] == RabbitBroker.from_url


async def test_unreachable_server_is_unavailable_without_the_password() -> None:
    """A refused connection raises BrokerUnavailable; the message hides the password."""
    broker = RabbitBroker("amqp://guest:s3cret@127.0.0.1:1/")
    with pytest.raises(BrokerUnavailable) as info:
        await broker.connect()
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


@pytest.mark.parametrize(
    "driver_error",
    [
        amqp_errors.AMQPConnectionError("Reconnect failed amqp:/guest:s3cret-canary@h/ux"),
        amqp_errors.ProbableAuthenticationError("AUTH s3cret-canary refused"),
    ],
)
def test_a_driver_error_echoing_the_password_hides_it(driver_error: Exception) -> None:
    """Core's `redact` cleans the driver's words, and no chained error keeps them."""
    url = "amqp://guest:s3cret-canary@127.0.0.1:1/"
    with pytest.raises(BrokerError) as info, map_errors(url, "connecting"):
        raise driver_error
    shown = "".join(traceback.format_exception(info.value))
    assert "s3cret-canary" not in shown
    assert "***" in str(info.value)


async def test_task_timeout_reaching_consumer_timeout_warns_or_refuses(
    amqp_url: str,
    upnext_queue: str,
    caplog: pytest.LogCaptureFixture,
    queue_deleter: Callable[[set[str]], Awaitable[None]],
) -> None:
    """A task whose timeout reaches consumer_timeout: a warning, or with strict=true no start."""
    sep = "&" if "?" in amqp_url else "?"
    for strict in ("false", "true"):
        url = f"{amqp_url}{sep}consumer_timeout=60&strict={strict}"
        worker = upnext.Worker(upnext_queue, broker=url)

        @worker.task(name="slow", timeout=60)
        async def slow() -> None:
            return None

        try:
            if strict == "true":
                with pytest.raises(ConfigurationError, match="delivery limit of 60"):
                    await worker.start()
            else:
                await worker.start()
                assert "reaches the broker's delivery limit of 60" in caplog.text
        finally:
            await worker.aclose()
    await queue_deleter({upnext_queue})


async def _start_logs(
    url: str, queue: str, caplog: pytest.LogCaptureFixture, timeout: float = 1800.0
) -> str:
    """What a worker with one task of `timeout` seconds logs while starting on `url`."""
    worker = upnext.Worker(queue, broker=url)

    @worker.task(name="job", timeout=timeout)
    async def job() -> None:
        return None

    caplog.clear()
    try:
        await worker.start()
    finally:
        await worker.aclose()
    return caplog.text


async def test_a_default_worker_does_not_warn_and_a_chosen_risk_does(
    amqp_url: str,
    upnext_queue: str,
    caplog: pytest.LogCaptureFixture,
    queue_deleter: Callable[[set[str]], Awaitable[None]],
) -> None:
    """Default timeout and consumer_timeout: silent; a longer timeout or a shorter limit: warned."""
    sep = "&" if "?" in amqp_url else "?"
    warning = "reaches the broker's delivery limit"
    assert warning not in await _start_logs(amqp_url, upnext_queue, caplog)
    assert warning in await _start_logs(amqp_url, upnext_queue, caplog, timeout=3600)
    short = f"{amqp_url}{sep}consumer_timeout=900"
    assert warning in await _start_logs(short, upnext_queue, caplog)
    await queue_deleter({upnext_queue})
