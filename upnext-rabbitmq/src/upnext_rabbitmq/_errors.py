"""Map aio-pika, aiormq and socket errors to upnext's broker errors.

Only `BrokerUnavailable` (cannot reach the server, connection or channel lost)
and `BrokerError` (the server refused) leave this package; messages name the
server by its redacted URL, never with a password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiormq.exceptions as amqp_errors
from upnext.broker.redact import redact, redact_url
from upnext.errors import BrokerError, BrokerUnavailable, UpNextError

__all__ = ["is_connection_error", "map_errors", "translate"]

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
)
_MAPPED: tuple[type[BaseException], ...] = (amqp_errors.AMQPError, *_UNAVAILABLE)


def is_connection_error(exc: BaseException) -> bool:
    """True if `exc` means the connection or its channel is gone, not a refusal."""
    if isinstance(exc, amqp_errors.ChannelClosed):
        # A channel closed under us without a server reason: connection trouble.
        return exc.__class__ is amqp_errors.ChannelClosed
    return isinstance(exc, _UNAVAILABLE)


def translate(exc: BaseException, url: str, doing: str) -> BrokerError:
    """The upnext error for driver error `exc`, raised while `doing` something."""
    if isinstance(exc, BrokerError):
        return exc
    where = redact_url(url)
    detail = redact(str(exc) or type(exc).__name__, url)
    if is_connection_error(exc):
        return BrokerUnavailable(f"RabbitMQ at {where} unavailable while {doing}: {detail}")
    return BrokerError(f"RabbitMQ at {where} refused {doing}: {detail}")


@contextmanager
def map_errors(url: str, doing: str) -> Iterator[None]:
    """Re-raise driver errors inside the block as upnext broker errors."""
    try:
        yield
    except UpNextError:
        raise
    except _MAPPED as exc:
        shown = str(exc)
        # A chained driver error must not show a password.
        raise translate(exc, url, doing) from (exc if redact(shown, url) == shown else None)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller's own cancellation
        # aiormq cancels the requests of a connection it closed (no frame for
        # (heartbeat + 1) * 3 s: a frozen server); the caller was not cancelled.
        where = redact_url(url)
        raise BrokerUnavailable(
            f"RabbitMQ at {where} unavailable while {doing}: the connection closed under it"
        ) from None
