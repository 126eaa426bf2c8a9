"""`receive_shielded`: receive without ever cancelling a backend's `receive`.

A worker stops receiving when it shuts down and before a job on its last
chance runs alone. Cancelling the broker's call could strand jobs it had
already taken (held until their lease ran out, then charged a lost run), so
every backend used to carry its own cancellation handling. Instead core asks
in short calls (`RECEIVE_SLICE` s at most, so a stop never waits long), and
when its caller is cancelled it lets the call in flight finish and gives
back whatever that call handed out with `Release`: uncounted, at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from upnext.broker.protocol import Broker, Delivery, Release

__all__ = ["OVERRUN_LIMIT", "RECEIVE_SLICE", "receive_shielded"]

log = logging.getLogger("upnext.worker")

# The longest one broker call blocks: a stopping worker waits at most this for it.
RECEIVE_SLICE = 0.25
# A cancelled caller waits this long past a call's own wait (a server that stopped
# answering) before cancelling it after all; and as long for the give-back.
OVERRUN_LIMIT = 2.0

T = TypeVar("T")


async def receive_shielded(
    broker: Broker, queues: Sequence[str], *, limit: int, lease: float, wait: float
) -> list[Delivery]:
    """Up to `limit` deliveries from `queues`, waiting up to `wait` s; never cancels `receive`.

    The wait is spent in calls of `broker.receive` of at most `RECEIVE_SLICE`
    s each. If the caller is cancelled, the call in flight runs to its end,
    every delivery it hands out is released, and then `CancelledError`
    propagates. Errors of `receive` propagate as they are.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(wait, 0.0)
    while True:
        left = max(deadline - loop.time(), 0.0)
        step = min(left, RECEIVE_SLICE)
        returned: asyncio.Future[list[Delivery]] = loop.create_future()
        receiving = broker.receive(queues, limit=limit, lease=lease, wait=step)
        call = loop.create_task(_receive_into(returned, receiving))
        try:
            got = await returned
        except asyncio.CancelledError:
            taken = await _outcome(call, step + OVERRUN_LIMIT)
            if taken:
                await _release(broker, taken)
            raise
        if got or left <= RECEIVE_SLICE:
            return got


async def _receive_into(
    returned: asyncio.Future[list[Delivery]], receiving: Awaitable[list[Delivery]]
) -> list[Delivery] | None:
    """Await `receiving` in a task of its own, handing its outcome to `returned`.

    Cancelling the caller that awaits `returned` leaves this task running:
    what `asyncio.shield` does, with half its overhead (one loop pass less;
    a draining worker receives once per few jobs). Returns what was
    received, or None if it failed.
    """
    try:
        got = await receiving
    except Exception as exc:
        if not returned.done():
            returned.set_exception(exc)
        return None
    except BaseException:
        returned.cancel()
        raise
    if not returned.done():
        returned.set_result(got)
    return got


async def _outcome(call: asyncio.Future[T], limit: float) -> T | None:
    """What `call` returns, waited for through further cancellations; None if it failed.

    A call still running after `limit` s is cancelled (last resort: it
    ignores its own wait, most likely blocked on a server that stopped
    answering).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not call.done() and loop.time() < deadline:
        try:
            await asyncio.wait([call], timeout=deadline - loop.time())
        except asyncio.CancelledError:
            continue  # this task is ending anyway; its caller gets the cancellation after
    if not call.done():
        log.warning("a receive ran %.1f s past its wait; cancelled", limit)
        call.cancel()
        return None
    if call.cancelled() or call.exception() is not None:
        return None
    return call.result()


async def _release(broker: Broker, taken: list[Delivery]) -> None:
    """Give `taken` back at once, uncounted; on failure they return when their leases end."""
    settle = asyncio.ensure_future(broker.settle([Release(d) for d in taken]))
    if await _outcome(settle, OVERRUN_LIMIT) is None:
        failed = settle.done() and not settle.cancelled()
        log.warning(
            "giving back %d jobs received while stopping failed (%s); they return after a lease",
            len(taken),
            settle.exception() if failed else "no answer",
        )
