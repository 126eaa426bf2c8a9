"""Results: non-destructive reads with a TTL, and one pub/sub listener per broker.

A result is a plain string key (``...:result:<job>``) written with ``PX`` in
the same script that acks the job, then announced on ``...:done:<job>``. A
waiter subscribes to its job's channel through the broker's single listener
connection, re-reads the key once the subscription is confirmed, and sleeps
on a future until the announcement (or its deadline). Waiters never hold a
connection; the listener pings its connection so a half-open one is found,
reconnects with backoff and re-subscribes, then wakes every waiter to re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from upnext.broker import Backoff
from upnext.broker.protocol import ResultWrite
from upnext.errors import BrokerUnavailable

from upnext_redis._client import RedisClient
from upnext_redis._millis import whole_ms

__all__ = ["ResultListener", "Results", "ttl_ms"]

log = logging.getLogger("upnext.redis")


def ttl_ms(ttl: float) -> int:
    """A TTL in whole milliseconds, rounded up; 0 means store nothing."""
    return whole_ms(ttl, "result ttl")


@dataclass(slots=True)
class _Channel:
    futures: set[asyncio.Future[None]] = field(default_factory=set)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_result(None)


class ResultListener:
    """One redis-py pub/sub connection that wakes every local waiter of a result."""

    def __init__(self, client: Redis, control: str, ping: float) -> None:
        self._client = client
        self._control = control.encode()
        self._ping = ping
        self._channels: dict[bytes, _Channel] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._senders: set[asyncio.Task[None]] = set()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="upnext-redis-results"
            )

    def watch(self, channel: bytes) -> tuple[_Channel, asyncio.Future[None]]:
        """Register a waiter on `channel`, subscribing if it is the first."""
        self._ensure_running()
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
            self._send("SUBSCRIBE", channel)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.futures.add(fut)
        return state, fut

    def rearm(self, state: _Channel, fut: asyncio.Future[None]) -> asyncio.Future[None]:
        """A fresh future on the same channel, replacing a resolved one."""
        state.futures.discard(fut)
        new: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.futures.add(new)
        return new

    def unwatch(self, channel: bytes, fut: asyncio.Future[None]) -> None:
        """Drop a waiter; the last one out unsubscribes."""
        state = self._channels.get(channel)
        if state is None:
            return
        state.futures.discard(fut)
        if not state.futures:
            del self._channels[channel]
            self._send("UNSUBSCRIBE", channel)

    def _send(self, command: str, channel: bytes) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # the listener subscribes to every watched channel when it connects
        task = asyncio.get_running_loop().create_task(self._write(pubsub, command, channel))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _write(self, pubsub: PubSub, command: str, channel: bytes) -> None:
        with contextlib.suppress(Exception):
            if command == "SUBSCRIBE":
                await pubsub.subscribe(channel)
            elif channel not in self._channels:  # not made stale by a new waiter meanwhile
                await pubsub.unsubscribe(channel)

    async def _run(self) -> None:
        backoff = Backoff(first=0.05, cap=2.0)
        while True:
            pubsub = self._client.pubsub()
            try:
                await self._subscribe(pubsub)
                backoff.reset()
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("result listener lost its Redis connection (%s); reconnecting", exc)
            finally:
                self._pubsub = None
                for state in self._channels.values():
                    state.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(next(backoff))

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Subscribe to the control channel and every watched one (the first send connects)."""
        first = list(self._channels)
        await pubsub.subscribe(self._control, *first)
        # No await between publishing the pub/sub and the snapshot below: a
        # channel watched after this line sends its own SUBSCRIBE.
        self._pubsub = pubsub
        since = [channel for channel in self._channels if channel not in first]
        if since:
            await pubsub.subscribe(*since)

    async def _read(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            message: Any = await pubsub.get_message(timeout=self._ping)
            if message is None:
                if pinged:
                    raise ConnectionError("no answer to PING on the pub/sub connection")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            kind, channel = message.get("type"), message.get("channel")
            state = self._channels.get(channel) if isinstance(channel, bytes) else None
            if kind == "message" and state is not None:
                state.wake()
            elif kind == "subscribe" and state is not None:
                state.subscribed.set()
                state.wake()  # re-read: a result may have landed while unsubscribed
            elif kind == "unsubscribe" and state is not None:
                state.subscribed.clear()
                self._send("SUBSCRIBE", channel)

    async def aclose(self) -> None:
        """Stop the listener and wake every waiter."""
        for state in self._channels.values():
            state.wake()
        tasks = [t for t in (self._task, *self._senders) if t is not None]
        # Cancel until done: a driver call may swallow one cancellation.
        while pending := [t for t in tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.1)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        self._task = None


class Results:
    """put_results and get_result on top of the shared client and listener."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self.listener = ResultListener(
            client.clients.listener,
            client.keys.listener_channel,
            client.options.health_check_interval,
        )

    async def put_results(self, writes: Sequence[ResultWrite]) -> None:
        """SET with PX and PUBLISH for each write, all in one round trip."""
        commands: list[tuple[Any, ...]] = []
        for write in writes:
            ms = ttl_ms(write.ttl)
            if ms == 0:
                continue
            keys = self._client.keys.queue(write.queue)
            commands.append(("SET", keys.result(write.job_id), write.data, "PX", ms))
            commands.append(("PUBLISH", keys.result_channel(write.job_id), "1"))
        if commands:
            await self._client.eval_many([], commands)

    async def _read(self, key: str) -> bytes | None:
        (data,) = await self._client.commands([("GET", key)])
        return bytes(data) if data is not None else None

    async def get_result(self, job_id: str, *, queue: str, wait: float) -> bytes | None:
        """Read the result, waiting up to `wait` s for it to be written.

        While waiting, an unreachable server is not an error yet: the wait
        goes on (the listener reconnects and wakes it); only the read at the
        deadline raises BrokerUnavailable.
        """
        keys = self._client.keys.queue(queue)
        key = keys.result(job_id)
        if wait <= 0:
            return await self._read(key)
        with contextlib.suppress(BrokerUnavailable):
            found = await self._read(key)
            if found is not None:
                return found  # already there: no subscription needed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        channel = keys.result_channel(job_id).encode()
        state, fut = self.listener.watch(channel)
        try:
            # Only a confirmed subscription guarantees no announcement is missed.
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` swallows a
            # cancellation that lands as the subscription is confirmed.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await state.subscribed.wait()
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return await self._read(key)
                try:
                    data = await self._read(key)
                except BrokerUnavailable:
                    data = None
                    remaining = min(remaining, 0.5)  # re-read soon even if no wake-up comes
                if data is not None:
                    return data
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await asyncio.shield(fut)
                fut = self.listener.rearm(state, fut)
        finally:
            self.listener.unwatch(channel, fut)
