"""Script and command calls shared by the broker, results and DLQ parts, on redis-py.

Every call goes through redis-py's public API: `execute_command` for one
command, a non-transactional pipeline for a batch (one write, one round trip;
on Cluster, one per server, sent together), its pools, and its `Retry` for
reconnects. Scripts run by SHA (EVALSHA); one a server lost (restart,
SCRIPT FLUSH) is loaded and run again, as redis-py's `Script` does.

Two guards sit around each call:

- A deadline: a whole call, redis-py's reconnects and retries included, ends
  within `socket_connect_timeout + socket_timeout` (a blocking one also gets
  the time it blocks), so a server that accepts connections and never
  answers (a frozen host) fails a call on time.
  redis-py itself gets no read timeout (see `_connect`).
- Cancellation: on Python 3.11 ``asyncio.wait_for`` can swallow a
  cancellation that arrives as the awaited call completes (CPython
  gh-86296). redis-py wraps sends in it when a connection has a read
  timeout (ours have none), and Sentinel's master lookup still does. So a
  call whose task was cancelled meanwhile (its `cancelling()` count grew)
  raises CancelledError when redis-py returns, and on Sentinel a blocking
  call runs in a task of its own that is cancelled until it stops: a
  cancelled receive never goes on blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster
from upnext.errors import BrokerError

from upnext_redis._config import RedisOptions
from upnext_redis._connect import build_clients
from upnext_redis._errors import ErrorMapper
from upnext_redis._lanes import Lanes
from upnext_redis.browse_scripts import WAITING
from upnext_redis.dlq_scripts import DLQ_SCRIPTS
from upnext_redis.keys import KeySpace
from upnext_redis.scripts import SCRIPTS, Script
from upnext_redis.state_scripts import STATE_SCRIPTS

__all__ = ["Call", "RedisClient"]

log = logging.getLogger("upnext.redis")

# Policies that may evict keys without TTL (allkeys-*) or results (volatile-*).
_EVICTING = ("allkeys-", "volatile-")

Call = tuple[Script, Sequence[str], Sequence[Any]]
# Lanes for blocking reads: one per receiver blocked at once, however many.
_UNCAPPED = 1 << 20
T = TypeVar("T")
Command = Sequence[Any]


def _evalsha(script: Script, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def _first_error(replies: Sequence[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


class RedisClient:
    """redis-py clients (commands, blocking reads, results), the key space and script calls.

    Blocking reads get their own connections so a receiver waiting for work
    never holds one that settle or enqueue needs. On Cluster redis-py routes
    each command by its keys; every key of a queue shares one hash tag.
    """

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        self.keys = KeySpace(options.prefix)
        self.errors = ErrorMapper(options.url)
        # Names make this object's connections findable in CLIENT LIST.
        self.name = f"upnext-{uuid.uuid4().hex[:8]}"
        try:
            self.clients = build_clients(options, self.name)
        except (ValueError, rx.RedisError) as exc:
            raise self.errors.error(exc) from None
        self.redis = self.clients.commands
        # Scripts and commands run on lanes: see `_lanes` (callers beyond
        # max_connections queue there, first come first served).
        self.lanes = Lanes(self.redis, options.max_connections)
        self._execute = self.lanes.run
        # Blocking reads (standalone and Sentinel) on lanes of their own; the
        # blocking pool has no cap, nor has this.
        self.block_lanes = Lanes(self.clients.blocking, _UNCAPPED)
        # redis-py leaves execute_command unannotated: typed once here.
        self._block: Callable[..., Awaitable[Any]] = self.clients.blocking.execute_command
        self.budget = options.socket_connect_timeout + options.socket_timeout

    @property
    def cluster(self) -> bool:
        """True on Redis Cluster: one script never spans two queues there."""
        return self.options.cluster

    def __str__(self) -> str:
        return self.options.safe_url

    # -- guards ----------------------------------------------------------------

    async def _guarded(self, call: Callable[[], Awaitable[T]], budget: float) -> T:
        """`call()` within `budget` seconds, driver errors mapped, no cancellation lost."""
        task = asyncio.current_task()
        before = task.cancelling() if task is not None else 0
        with self.errors.boundary():
            try:
                async with asyncio.timeout(budget) as limit:
                    result = await call()
                    if task is not None and task.cancelling() > before:
                        raise asyncio.CancelledError  # one redis-py swallowed (gh-86296)
            except TimeoutError:
                if not limit.expired():
                    raise
                raise rx.TimeoutError(
                    f"no answer within {round(budget, 2):g}s, reconnects included"
                ) from None
            return result

    async def _apart(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` in a task of its own, cancelled until it stops if we are cancelled.

        Only on Sentinel: there a reconnect asks the sentinels through redis-py's
        ``wait_for`` (their socket timeout). Elsewhere no ``wait_for`` lies on a
        blocking call's path (no read timeout, see `_connect`), so the call runs
        in our task: the task and the loop hop per wake-up cost ~14 us of a
        woken receive's hand-over (docs/benchmarks.md).
        """
        if not self.options.sentinels:
            return await call()
        inner = asyncio.ensure_future(call())
        try:
            await asyncio.wait({inner})
        except asyncio.CancelledError:
            # redis-py may swallow one cancellation (see the module docstring):
            # cancel again until it stops; its read then drops the connection.
            while not inner.done():
                inner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({inner}, timeout=0.05)
            raise
        return inner.result()

    # -- calls -------------------------------------------------------------------

    async def _pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Run `commands` in one non-transactional pipeline; replies in order, errors as values."""
        return await self.lanes.pipeline(commands)

    async def _eval_once(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        command = _evalsha(script, keys, args)
        try:
            return await self.lanes.script(*command)
        except rx.NoScriptError:
            await self._load([script])
            return await self.lanes.script(*command)

    async def _load(self, scripts: Sequence[Script]) -> None:
        """SCRIPT LOAD each of `scripts` (on Cluster: on every primary)."""
        target = {"target_nodes": RedisCluster.PRIMARIES} if self.cluster else {}
        for source in dict.fromkeys(s.source for s in scripts):
            await self._execute("SCRIPT", "LOAD", source, **target)

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script by SHA, loading it if the server lost it."""
        return await self._guarded(lambda: self._eval_once(script, keys, args), self.budget)

    async def commands(self, commands: Sequence[Command]) -> list[Any]:
        """Run plain commands in one round trip (per server); errors raised."""
        if len(commands) == 1:
            command = commands[0]
            return [await self._guarded(lambda: self._execute(*command), self.budget)]
        replies = await self._guarded(lambda: self._pipeline(commands), self.budget)
        with self.errors.boundary():
            _first_error(replies)
        return replies

    async def eval_many(self, calls: Sequence[Call], extra: Sequence[Command] = ()) -> list[Any]:
        """Run several scripts (and plain commands) in one pipelined round trip per server.

        Returns the scripts' replies in order; replies of `extra` commands are
        checked for errors and dropped. A script a server lost (restart,
        SCRIPT FLUSH) is loaded there and run again.
        """
        if len(calls) == 1 and not extra:
            return [await self.eval(*calls[0])]
        commands = [_evalsha(*call) for call in calls] + [tuple(c) for c in extra]
        return await self._guarded(lambda: self._eval_pipeline(calls, commands), self.budget)

    async def _eval_pipeline(self, calls: Sequence[Call], commands: Sequence[Command]) -> list[Any]:
        replies = await self._pipeline(commands)
        missing = [i for i in range(len(calls)) if isinstance(replies[i], rx.NoScriptError)]
        if missing:
            await self._load([calls[i][0] for i in missing])
            again = await self._pipeline([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        _first_error(replies)
        return replies[: len(calls)]

    async def block(self, command: Command, seconds: float) -> Any:
        """Run a command that blocks up to `seconds` (XREAD BLOCK) on the blocking connections."""
        budget = self.budget + seconds
        return await self._guarded(lambda: self._apart(lambda: self._block(*command)), budget)

    async def block_pipeline(self, commands: Sequence[Command], seconds: float) -> list[Any]:
        """A command blocking up to `seconds` and what follows it, in one pipeline.

        Replies in order, errors as values.
        """
        budget = self.budget + seconds
        return await self._guarded(
            lambda: self._apart(lambda: self.block_lanes.exchange(commands)), budget
        )

    # -- connect and close ---------------------------------------------------------

    async def check_server(self) -> None:
        """On every server: ping, load every script, and check the eviction policy."""
        limit = self.budget
        try:
            async with asyncio.timeout(limit):
                await self._check_nodes()
        except TimeoutError:
            raise self.errors.unavailable(TimeoutError(f"no answer within {limit:g}s")) from None

    async def _check_nodes(self) -> None:
        scripts = (*SCRIPTS, *DLQ_SCRIPTS, *STATE_SCRIPTS, WAITING)
        with self.errors.boundary():
            if isinstance(self.redis, RedisCluster):
                await self.redis.initialize()
                for node in self.redis.get_primaries():
                    await self._execute("PING", target_nodes=node)
                    for script in scripts:
                        await self._execute("SCRIPT", "LOAD", script.source, target_nodes=node)
                    policy = await self._policy(target_nodes=node)
                    self._check_policy(policy)
                return
            await self._execute("PING")
            commands: list[Command] = [("SCRIPT", "LOAD", s.source) for s in scripts]
            _first_error(await self._pipeline(commands))
            self._check_policy(await self._policy())

    async def _policy(self, **target: Any) -> Any:
        try:
            return await self._execute("CONFIG", "GET", "maxmemory-policy", **target)
        except rx.ResponseError as exc:
            return exc

    def _check_policy(self, reply: Any) -> None:
        if isinstance(reply, rx.ResponseError):
            # CONFIG is often renamed or denied on managed Redis; we cannot tell.
            log.info("cannot read maxmemory-policy from %s; make sure it is noeviction", self)
            return
        values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
        value = values[0] if values else b""
        policy = value.decode() if isinstance(value, bytes) else str(value)
        if policy.startswith(_EVICTING):
            message = (
                f"Redis at {self.options.safe_url} has maxmemory-policy {policy}: "
                "it may evict queued jobs or results when memory runs out; "
                "set it to noeviction"
            )
            if self.options.strict:
                raise BrokerError(message + " (refused: strict=true)")
            log.warning(message)

    async def aclose(self) -> None:
        """Close every client and its connections (they reopen on the next call)."""
        await self.lanes.aclose()
        await self.block_lanes.aclose()
        await self.clients.aclose()
