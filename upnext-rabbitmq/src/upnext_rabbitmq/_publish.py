"""Confirmed, mandatory publishing: a returned message is a failed publish.

Every publish waits for the broker's confirm; publishes of one call are sent
together and their confirms awaited together. A ``basic.return`` (nothing
bound to take the message: a queue or delay level deleted by hand) makes the
broker re-declare the topology the message needed, and the message is
published once more; a second return is a `BrokerError`, never a silent loss.
A delay exchange deleted by hand closes the channel instead (404): the same
re-declare and one more try, for every publish that was in flight on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity
from pamqp.commands import Basic
from pamqp.common import FieldTable
from upnext.errors import BrokerError

from upnext_rabbitmq._confirms import ConfirmConnection, Nacked, Returned
from upnext_rabbitmq._errors import translate

__all__ = ["Outgoing", "Publisher", "persistent"]

PERSISTENT = 2
# Seconds a publish may wait for its confirms before failing.
PUBLISH_TIMEOUT = 15.0
# Seconds a publish waits for a new connection (a server that accepts and does
# not answer) before it fails as unavailable; a refused connection fails at once.
RECONNECT_WAIT = 4.0
_CONNECT_TIMEOUT = 10.0


def persistent(
    message_id: str | None = None,
    *,
    headers: FieldTable | None = None,
    correlation_id: str | None = None,
    expiration: str | None = None,
    priority: int = 0,
) -> Basic.Properties:
    """Properties of a message that survives a broker restart (priority 0 is left out)."""
    return Basic.Properties(
        delivery_mode=PERSISTENT,
        message_id=message_id,
        headers=headers,
        correlation_id=correlation_id,
        expiration=expiration,
        priority=priority or None,
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish, and the upnext queue whose topology it needs.

    `needs` is the upnext queue whose work and dead-letter queues must exist;
    None for a message that only needs the delay ladder (or nothing).
    """

    exchange: str
    routing_key: str
    body: bytes
    properties: Basic.Properties
    needs: str | None = None
    mandatory: bool = True


Redeclare = Callable[[set[str | None]], Awaitable[None]]


class Publisher:
    """Publishes batches on a confirming lean connection, re-declaring on a return.

    The connection is its own (not aio-pika's): a publish is one socket write
    and its confirm one read (see `_confirms`). Lost, it is opened again by the
    next publish: at once if the server is there, BrokerUnavailable if it
    refuses, and at most `RECONNECT_WAIT` s if it does not answer.
    """

    def __init__(self, url: str, amqp_url: str, redeclare: Redeclare, *, heartbeat: int) -> None:
        self._url = url
        self._amqp_url = amqp_url
        self._heartbeat = heartbeat
        self._redeclare = redeclare
        self._connection: ConfirmConnection | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """Open the publishing connection now (errors surface at connect)."""
        await self._ready(_CONNECT_TIMEOUT)

    async def close(self) -> None:
        """Close the publishing connection; publishes in flight fail."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def publish(self, messages: Sequence[Outgoing]) -> list[BrokerError | None]:
        """Publish `messages`; per message None (confirmed) or the error."""
        if not messages:
            return []
        outcomes = await self._send(messages)
        returned = [i for i, out in enumerate(outcomes) if isinstance(out, Returned)]
        if any(isinstance(out, ChannelNotFoundEntity) for out in outcomes):
            # An exchange deleted by hand: the server closed the channel (404),
            # failing every publish in flight on it. Re-declare and send all of
            # them again (on the next channel).
            returned = [i for i, out in enumerate(outcomes) if out is not None]
        if returned:
            await self._redeclare({messages[i].needs for i in returned})
            again = await self._send([messages[i] for i in returned])
            for i, out in zip(returned, again, strict=True):
                outcomes[i] = out
        return [
            None if out is None else self._error(out, messages[i]) for i, out in enumerate(outcomes)
        ]

    async def publish_all(self, messages: Sequence[Outgoing], doing: str) -> None:
        """Publish `messages`; raise the first error, if any (after all were tried)."""
        for error in await self.publish(messages):
            if error is not None:
                raise error

    async def _ready(self, wait: float = RECONNECT_WAIT) -> ConfirmConnection:
        # One try, bounded: a server that refuses fails the publish at once
        # (BrokerUnavailable, the caller decides), one that hangs within `wait`.
        async with self._lock, asyncio.timeout(wait):
            connection = self._connection
            if connection is None or not connection.is_open:
                connection = self._connection = await ConfirmConnection.open(
                    self._amqp_url, heartbeat=self._heartbeat, name="upnext publisher"
                )
            elif not connection.ready:
                await connection.reopen_channel()
            return connection

    async def _send(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        try:
            connection = self._connection
            if connection is None or not connection.ready:
                connection = await self._ready()
        except TimeoutError:
            lost = ConnectionError(f"not reconnected within {RECONNECT_WAIT:g} s")
            return [lost] * len(messages)
        except Exception as exc:
            return [exc] * len(messages)
        futures: list[asyncio.Future[None]] = []
        outcomes: list[BaseException | None] = [None] * len(messages)
        for i, m in enumerate(messages):
            try:
                futures.append(
                    connection.publish(
                        m.exchange, m.routing_key, m.body, m.properties, mandatory=m.mandatory
                    )
                )
            except AMQPConnectionError as exc:  # the connection went while writing
                outcomes[i:] = [exc] * (len(messages) - i)
                break
            except Exception as exc:  # this message only (a name too long for AMQP)
                outcomes[i] = exc
                futures.append(_failed(exc))
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                for i, future in enumerate(futures):
                    try:
                        await future
                    except Exception as exc:
                        outcomes[i] = exc
        except asyncio.CancelledError:
            for future in futures:  # nobody will read them
                future.cancel()
            raise
        except TimeoutError:
            for i, future in enumerate(futures):
                if not future.done() or future.cancelled():
                    future.cancel()
                    outcomes[i] = TimeoutError(f"no confirm within {PUBLISH_TIMEOUT:.0f} s")
                else:  # settled while an earlier one was awaited
                    outcomes[i] = future.exception()
        return outcomes

    def _error(self, exc: BaseException, message: Outgoing) -> BrokerError:
        if isinstance(exc, Returned):
            where = message.exchange or "the default exchange"
            return BrokerError(
                f"RabbitMQ returned a message to {where} with routing key "
                f"{message.routing_key!r} again after re-declaring the topology: unroutable"
            )
        if isinstance(exc, Nacked):
            return BrokerError(f"RabbitMQ refused a message ({exc}); it was not enqueued")
        return translate(exc, self._url, "publishing")


def _failed(exc: Exception) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
