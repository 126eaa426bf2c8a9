"""Receiving on Redis: the RECEIVE script, and a block on the queues' wake streams between tries.

A receiver with nothing to do blocks on ``XREAD`` of each queue's ``wake``
stream from the entry id its script last saw, so a wake-up between its
script and its block is never missed; each block is capped at the next due
time or lease deadline the script reported from Redis ``TIME``. On a single
server the block and the next RECEIVE go in one pipeline: one round trip.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from redis import exceptions as rx
from upnext.broker.protocol import Delivery, Release

from upnext_redis._client import RedisClient
from upnext_redis._replies import Taken, deliveries, taken
from upnext_redis.dlq import delay_ms
from upnext_redis.scripts import RECEIVE

__all__ = ["Receiver"]


class Receiver:
    """`RedisBroker.receive`: takes due jobs, blocking on wake streams between tries."""

    def __init__(
        self,
        client: RedisClient,
        recovery_interval: float,
        release: Callable[[list[Release]], Awaitable[object]],
    ) -> None:
        self.client = client
        # The longest one block lasts: leases expire unannounced, so look again then.
        self.recovery_interval = recovery_interval
        # Settles Release items (jobs a failed block's script took: nobody runs them).
        self.release = release
        self.waiting: Counter[str] = Counter()  # queues the receives in flight block on
        self.wakes = 0  # `wake` calls so far: a receive returns once it changes

    async def receive(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Hand out up to `limit` due jobs, blocking up to `wait` s for one."""
        names = list(dict.fromkeys(queues))
        if not names or limit <= 0:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        lease_ms = max(1, delay_ms(lease))
        wakes = self.wakes
        got, until_ms, seen = await self._take(names, limit, lease_ms)
        if got:
            return got
        self.waiting.update(names)
        try:
            while not got:
                remaining = deadline - loop.time()
                if remaining <= 0 or self.wakes != wakes:
                    return []
                block = min(remaining, self.recovery_interval)
                if until_ms >= 0:
                    block = min(block, (until_ms + 1) / 1000)
                if self.client.cluster:
                    await self._block(names, seen, block)
                    got, until_ms, seen = await self._take(names, limit, lease_ms)
                else:
                    got, until_ms, seen = await self._block_then_take(
                        names, seen, block, limit, lease_ms
                    )
            return got
        finally:
            self.waiting.subtract(names)
            self.waiting = +self.waiting  # drop the queues no receive waits on

    async def wake(self) -> None:
        """End the receives in flight: a wake entry on each stream they block on."""
        self.wakes += 1
        if self.waiting:
            keys = self.client.keys
            await self.client.commands(
                [("XADD", keys.queue(q).wake, "MAXLEN", "1", "*", "w", "1") for q in self.waiting]
            )

    async def _take(self, names: list[str], limit: int, lease_ms: int) -> Taken:
        """Run RECEIVE: deliveries, ms until the next due time or lease end, stream ids seen.

        Standalone, one script serves every queue; on Cluster each queue gets
        its own (two queues' keys never share a script there), in order.
        """
        batches = [[q] for q in names] if self.client.cluster else [names]
        out: list[Delivery] = []
        until_ms = -1
        seen: list[bytes] = []
        for batch in batches:
            groups = [key for q in batch for key in self.client.keys.queue(q).group]
            args = (limit - len(out), lease_ms, len(batch))
            reply = await self.client.eval(RECEIVE, groups, args)
            if len(reply) > 2 + 3 * len(batch):
                out += deliveries(batch, reply)
                if len(out) >= limit:
                    break
            # Each server has its own clock: keep the wait relative to it.
            if int(reply[1]) >= 0:
                wait_ms = int(reply[1]) - int(reply[0])
                until_ms = wait_ms if until_ms < 0 else min(until_ms, wait_ms)
            seen += [bytes(reply[2 + 3 * i]) for i in range(len(batch))]
        return out, until_ms, seen

    async def _block_then_take(
        self, names: list[str], seen: list[bytes], seconds: float, limit: int, lease_ms: int
    ) -> Taken:
        """XREAD BLOCK and RECEIVE in one pipeline (standalone Redis): one round trip.

        The script runs on the server as soon as the block ends, woken or
        timed out, so the reply is exactly what `_take` would return then.
        """
        ms = max(1, int(seconds * 1000))
        streams = [self.client.keys.queue(q).wake for q in names]
        groups = [key for q in names for key in self.client.keys.queue(q).group]
        args = (limit, lease_ms, len(names))
        xread, reply = await self.client.block_pipeline(
            [
                ("XREAD", "BLOCK", ms, "STREAMS", *streams, *seen),
                ("EVALSHA", RECEIVE.sha, len(groups), *groups, *args),
            ],
            seconds,
        )
        if isinstance(xread, Exception):
            if isinstance(reply, list):
                got = taken(names, reply)[0]
                if got:  # the block failed but the script ran: nobody will run these
                    await self.release([Release(d) for d in got])
            with self.client.errors.boundary():
                raise xread
        if isinstance(reply, rx.NoScriptError):
            # The server lost the script (restart, SCRIPT FLUSH): load it and take again.
            reply = await self.client.eval(RECEIVE, groups, args)
        elif isinstance(reply, Exception):
            with self.client.errors.boundary():
                raise reply
        return taken(names, reply)

    async def _block(self, names: list[str], seen: list[bytes], seconds: float) -> None:
        # XREAD from the ids the script saw: an XADD since then returns at once.
        ms = max(1, int(seconds * 1000))
        streams = [self.client.keys.queue(q).wake for q in names]
        if not self.client.cluster or len(streams) == 1:
            await self.client.block(["XREAD", "BLOCK", ms, "STREAMS", *streams, *seen], seconds)
            return
        # On Cluster one XREAD per queue (one slot each); the first to return wins.
        tasks = [
            asyncio.create_task(self.client.block(["XREAD", "BLOCK", ms, "STREAMS", s, i], seconds))
            for s, i in zip(streams, seen, strict=True)
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()
