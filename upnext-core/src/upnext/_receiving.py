"""Receiving without ever cancelling a backend's `receive`.

A worker stops receiving when it shuts down and before a job on its last
chance runs alone. Cancelling the broker's call could strand jobs it had
already taken (held until their lease ran out, then charged a lost run), so
core never does: it asks in short calls (`RECEIVE_SLICE` s at most) from a
task of its own, and to stop that task it sets a flag and lets the call in
flight return; whatever that call handed out is given back with `Release`,
uncounted, at once. A broker that implements `WakeableReceive` is told to
end the call now; others end it within the slice. The draining path pays
nothing for this: no extra task or future per receive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from upnext.broker.optional import WakeableReceive
from upnext.broker.protocol import Broker, Delivery, Release

__all__ = ["OVERRUN_LIMIT", "RECEIVE_SLICE", "give_back", "receive_sliced", "stop_receiver"]

log = logging.getLogger("upnext.worker")

# The longest one broker call blocks: a stopping worker waits at most this for it.
RECEIVE_SLICE = 0.25
# How long past a call's own wait a stopping receiver is waited for (a server
# that stopped answering) before it is cancelled after all.
OVERRUN_LIMIT = 2.0


async def receive_sliced(
    broker: Broker,
    queues: Sequence[str],
    *,
    limit: int,
    lease: float,
    wait: float,
    stopped: asyncio.Event,
    changed: asyncio.Event | None = None,
) -> list[Delivery]:
    """Up to `limit` deliveries, waiting up to `wait` s in calls of at most `RECEIVE_SLICE` s.

    Returns early, with what the last call handed out (often nothing), once
    `stopped` is set: the caller then gives that back (`give_back`); or once
    `changed` is set (the queues to ask changed): the caller keeps what it got
    and asks again. Errors of `receive` propagate as they are.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(wait, 0.0)
    while True:
        left = max(deadline - loop.time(), 0.0)
        got = await broker.receive(queues, limit=limit, lease=lease, wait=min(left, RECEIVE_SLICE))
        if got or left <= RECEIVE_SLICE or stopped.is_set():
            return got
        if changed is not None and changed.is_set():
            return got


async def give_back(
    settle: Callable[[list[Release]], Awaitable[object]], taken: Sequence[Delivery]
) -> None:
    """Release `taken` at once, uncounted; on failure they return when their leases end."""
    if not taken:
        return
    try:
        await settle([Release(delivery) for delivery in taken])
    except Exception as exc:
        log.warning(
            "giving back %d jobs received while stopping failed (%s); they return after a lease",
            len(taken),
            exc,
        )


async def stop_receiver(
    receiver: asyncio.Task[None], stopped: asyncio.Event, broker: object = None
) -> None:
    """Set `stopped` and wait for `receiver` to end; cancel it only as a last resort.

    A receiver ends within one `RECEIVE_SLICE` (plus its give-back), at once
    if `broker` is a `WakeableReceive` (a wake that fails or hangs costs only
    that slice); one still running `RECEIVE_SLICE + OVERRUN_LIMIT` s later is
    blocked on a server that stopped answering, and is cancelled: what its
    call took then comes back when its lease ends.
    """
    stopped.set()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + RECEIVE_SLICE + OVERRUN_LIMIT
    waker = broker if isinstance(broker, WakeableReceive) else None
    if waker is not None and not receiver.done():
        try:
            async with asyncio.timeout(RECEIVE_SLICE):
                await waker.wake_receivers()
        except Exception as exc:  # the receive still ends with its slice
            log.debug("waking the receive in flight failed (%s); it ends with its wait", exc)
    done, _ = await asyncio.wait([receiver], timeout=max(give_up - loop.time(), 0.0))
    if not done:
        log.warning("a receive ran %.1f s past its wait; cancelled", OVERRUN_LIMIT)
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
