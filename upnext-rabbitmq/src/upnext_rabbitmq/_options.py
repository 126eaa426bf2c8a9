"""upnext's own options in an ``amqp://`` URL, split from what aio-pika reads.

    amqp://user:pass@host:5672/vhost?prefetch=40&consumer_timeout=3600

- ``prefetch``: unacked deliveries per consumer (default 2 x the first
  receive's `limit`: 2 x (concurrency + the worker's own prefetch)).
- ``consumer_timeout``: the server's consumer_timeout in seconds (default
  1800, RabbitMQ's default), declared as the capability `delivery_limit`:
  core warns about task timeouts that reach it.
- ``dlq_busy_wait``: seconds a dead-letter admin waits for another admin to
  finish before failing with "busy" (default 2).
- ``strict``: ``true`` makes a worker refuse to start with a task whose
  timeout reaches ``consumer_timeout`` (default ``false``: it warns); the
  capability `delivery_limit_strict`.
- ``queue_type``: ``classic`` (default) or ``quorum`` work queues;
  ``delivery_limit`` (default 5 = 3 lost runs + 2) is their x-delivery-limit.

The options aio-pika and aiormq read (``heartbeat``, ``timeout``,
``name``, ``auth``, the TLS files, ...) go to aio-pika unchanged; any other
is a ConfigurationError, since aio-pika would ignore it in silence. Two of aio-pika's
get other defaults when the URL does not set them: ``reconnect_interval=1``
(aio-pika: 5 s), so work resumes within about a second of the server's
return; and ``heartbeat=3`` (server default: 60 s), so a connection that went
silent without closing is dropped and replaced within about 13 s (aio-pika
gives up after three missed heartbeats) instead of three minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aio_pika.abc import AbstractRobustConnection
from upnext._urls import check_url, did_you_mean
from upnext.broker.protocol import MAX_PRIORITY, Capabilities
from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError

from upnext_rabbitmq.topology import QUANTUM

__all__ = ["RabbitOptions", "capabilities_of", "parse_url", "server_version"]

_OURS = {"prefetch", "consumer_timeout", "dlq_busy_wait", "queue_type", "delivery_limit", "strict"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
# What aio-pika and aiormq read from the URL; anything else would be ignored in silence.
_DRIVER_OPTIONS = {
    "auth",
    "cafile",
    "capath",
    "cadata",
    "certfile",
    "keyfile",
    "no_verify_ssl",
    "heartbeat",
    "timeout",
    "name",
    "reconnect_interval",
    "fail_fast",
    "interleave",
    "happy_eyeballs_delay",
}
# aio-pika options whose defaults upnext changes (see the module docstring).
_DRIVER_DEFAULTS = {"reconnect_interval": "1", "heartbeat": "3"}


@dataclass(frozen=True, slots=True)
class RabbitOptions:
    """Parsed settings of one RabbitMQ broker."""

    amqp_url: str
    prefetch: int | None = None
    consumer_timeout: float = 1800.0
    dlq_busy_wait: float = 2.0
    queue_type: Literal["classic", "quorum"] = "classic"
    delivery_limit: int = 5
    strict: bool = False
    # Seconds between heartbeats on every connection (the URL's, default 3; 0: none).
    heartbeat: int = 3


def _number(name: str, raw: str, url: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigurationError(f"{name} must be a positive number in {redact_url(url)!r}")
    return value


def parse_url(url: str) -> RabbitOptions:
    """Split `url` into aio-pika's URL and upnext's options; ConfigurationError if bad."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("amqp", "amqps"):
        raise ConfigurationError(f"not an amqp:// or amqps:// URL: {redact_url(url)!r}")
    check_url(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    for key, _ in pairs:
        if key not in _OURS | _DRIVER_OPTIONS:
            raise ConfigurationError(
                f"unknown RabbitMQ URL option {key!r}{did_you_mean(key, _OURS | _DRIVER_OPTIONS)}"
                f" in {redact_url(url)!r}"
            )
    ours = {k: v for k, v in pairs if k in _OURS}
    driver = [(k, v) for k, v in pairs if k not in _OURS]
    given = {k for k, _ in driver}
    driver += [(k, v) for k, v in _DRIVER_DEFAULTS.items() if k not in given]
    rest = urlencode(driver)
    queue_type = ours.get("queue_type", "classic")
    if queue_type not in ("classic", "quorum"):
        raise ConfigurationError(f"queue_type must be classic or quorum in {redact_url(url)!r}")
    prefetch = ours.get("prefetch")
    strict = ours.get("strict", "false").lower()
    if strict not in _TRUE | _FALSE:
        raise ConfigurationError(f"strict must be true or false in {redact_url(url)!r}")
    heartbeat = dict(driver)["heartbeat"]
    if not heartbeat.isdigit():
        raise ConfigurationError(f"heartbeat must be whole seconds in {redact_url(url)!r}")
    return RabbitOptions(
        amqp_url=urlunsplit(parts._replace(query=rest)),
        heartbeat=int(heartbeat),
        prefetch=int(_number("prefetch", prefetch, url)) if prefetch else None,
        consumer_timeout=_number("consumer_timeout", ours.get("consumer_timeout", "1800"), url),
        dlq_busy_wait=_number("dlq_busy_wait", ours.get("dlq_busy_wait", "2"), url),
        queue_type="quorum" if queue_type == "quorum" else "classic",
        delivery_limit=int(_number("delivery_limit", ours.get("delivery_limit", "5"), url)),
        strict=strict in _TRUE,
    )


def server_version(connection: AbstractRobustConnection) -> tuple[int, ...]:
    """The server's version as numbers, e.g. (3, 10, 8); () if it does not say."""
    transport = connection.transport
    raw: Any = transport.connection.server_properties.get("version") if transport else None
    text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
    parts = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def capabilities_of(options: RabbitOptions) -> Capabilities:
    """What a broker with these options offers beyond the mandatory contract."""
    return Capabilities(
        # The server, not a lease, decides when an unacked message returns.
        timed_leases=False,
        counts_deliveries=options.queue_type == "quorum",  # x-delivery-count
        cancel_queued=False,  # a message cannot be taken from the middle of a queue
        dlq_access="scan",  # the DLQ is a queue, read under an exclusive consumer
        dedupes_on_enqueue=False,  # a publish cannot ask whether an id is queued
        transactional_enqueue=False,
        delay_quantum=QUANTUM,
        delivery_limit=options.consumer_timeout,
        delivery_limit_strict=options.strict,
        checked_settles=True,  # a receipt of a closed channel is refused, never re-acked
        atomic_settles=False,  # publish (confirmed) the new body or record, then ack
        exact_stats=False,  # other processes' prefetched jobs and level moves are missed
        priority_levels=MAX_PRIORITY + 1,  # the AMQP property; no x-max-priority queues
    )
