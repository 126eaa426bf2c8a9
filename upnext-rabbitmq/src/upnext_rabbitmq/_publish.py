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
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelNotFoundEntity, PublishError
from pamqp.commands import Basic
from pamqp.common import FieldTable
from upnext.errors import BrokerError

from upnext_rabbitmq._errors import translate

__all__ = ["Outgoing", "Publisher", "persistent"]

PERSISTENT = 2
# Seconds a publish may wait for its confirm (and for a reconnect) before failing.
PUBLISH_TIMEOUT = 15.0
# Seconds a publish waits for a lost connection to come back before it fails as
# unavailable: an enqueue during an outage fails fast instead of hanging.
RECONNECT_WAIT = 4.0


def persistent(
    message_id: str | None = None,
    *,
    headers: FieldTable | None = None,
    correlation_id: str | None = None,
    expiration: str | None = None,
) -> Basic.Properties:
    """Properties of a message that survives a broker restart."""
    return Basic.Properties(
        delivery_mode=PERSISTENT,
        message_id=message_id,
        headers=headers,
        correlation_id=correlation_id,
        expiration=expiration,
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
    """Publishes batches on one confirming channel, re-declaring on a return."""

    def __init__(self, channel: AbstractChannel, redeclare: Redeclare, url: str) -> None:
        self._channel = channel
        self._redeclare = redeclare
        self._url = url

    async def publish(self, messages: Sequence[Outgoing]) -> list[BrokerError | None]:
        """Publish `messages`; per message None (confirmed) or the error."""
        if not messages:
            return []
        outcomes = await self._send(messages)
        returned = [i for i, out in enumerate(outcomes) if isinstance(out, PublishError)]
        if any(isinstance(out, ChannelNotFoundEntity) for out in outcomes):
            # An exchange deleted by hand: the server closed the channel (404),
            # failing every publish in flight on it. Re-declare, wait for
            # aio-pika to reopen the channel, and send all of them again.
            returned = [i for i, out in enumerate(outcomes) if out is not None]
        if returned:
            await self._redeclare({messages[i].needs for i in returned})
            await self._channel_ready()
            again = await self._send([messages[i] for i in returned])
            for i, out in zip(returned, again, strict=True):
                outcomes[i] = out
        return [
            None if out is None else self._error(out, messages[i]) for i, out in enumerate(outcomes)
        ]

    async def _channel_ready(self) -> None:
        ready = getattr(self._channel, "ready", None)
        if ready is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await ready()

    async def publish_all(self, messages: Sequence[Outgoing], doing: str) -> None:
        """Publish `messages`; raise the first error, if any (after all were tried)."""
        for error in await self.publish(messages):
            if error is not None:
                raise error

    async def _send(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        # While aio-pika reconnects, getting the channel waits; bound that wait.
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                return await self._send_now(messages)
        except TimeoutError:
            lost = TimeoutError(f"no confirm within {PUBLISH_TIMEOUT:.0f} s (reconnecting?)")
            return [lost] * len(messages)

    async def _send_now(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        try:
            async with asyncio.timeout(RECONNECT_WAIT):
                underlay = await self._channel.get_underlay_channel()
            # aiormq's concrete channel: its basic_publish takes `wait`.
            channel = cast(aiormq.Channel, underlay)
        except TimeoutError:
            lost = ConnectionError(f"not reconnected within {RECONNECT_WAIT:g} s")
            return [lost] * len(messages)
        except Exception as exc:
            return [exc] * len(messages)
        if len(messages) == 1:
            # One at a time (submit): no gather, no task, just the publish.
            try:
                await _publish(channel, messages[0])
            except Exception as exc:
                return [exc]
            return [None]
        results = await asyncio.gather(
            *(_publish(channel, m) for m in messages), return_exceptions=True
        )
        return [result if isinstance(result, BaseException) else None for result in results]

    def _error(self, exc: BaseException, message: Outgoing) -> BrokerError:
        if isinstance(exc, PublishError):
            where = message.exchange or "the default exchange"
            return BrokerError(
                f"RabbitMQ returned a message to {where} with routing key "
                f"{message.routing_key!r} again after re-declaring the topology: unroutable"
            )
        return translate(exc, self._url, "publishing")


async def _publish(channel: aiormq.Channel, message: Outgoing) -> object:
    """One basic.publish; returns once its frames are written (the confirm comes later)."""
    # wait=False: don't hold the channel lock until each frame is written; the
    # confirm is what the caller waits for, and it comes after the write.
    return await channel.basic_publish(
        message.body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        properties=message.properties,
        mandatory=message.mandatory,
        wait=False,
    )
