"""In-process wake-ups: one pair of bells per database file, shared by its brokers.

SQLite has no notifications across processes. A commit in this process rings
the file's bells at once, waking blocked receivers and result waiters of every
broker on that file here (a producer and a worker in one process get sub-ms
wake-ups). Other processes' commits are seen by a bounded poll instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Bell", "bells_for", "watch"]

T = TypeVar("T")
# A look: what it found (None: nothing yet) and the Unix time of the next due event.
Look = Callable[[], Awaitable[tuple[T | None, float | None]]]

# Process-wide by necessity: brokers built independently from one URL (a
# producer's and a worker's) must find each other's bells.
_BELLS: dict[str, tuple[Bell, Bell]] = {}
_BELLS_LOCK = threading.Lock()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Bell:
    """Futures of blocked calls, each resolved on its own event loop when rung."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # rung from the database thread
        self._waiters: set[asyncio.Future[None]] = set()

    def arm(self) -> asyncio.Future[None]:
        """A future of the running loop, resolved by the next `ring`."""
        fut = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.add(fut)
        return fut

    def disarm(self, fut: asyncio.Future[None]) -> None:
        """Forget a future that no longer waits."""
        with self._lock:
            self._waiters.discard(fut)

    def ring(self) -> None:
        """Wake every armed future, from any thread."""
        with self._lock:
            waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits
                fut.get_loop().call_soon_threadsafe(_resolve, fut)


def bells_for(path: str) -> tuple[Bell, Bell]:
    """The (jobs, results) bells of one database file in this process."""
    with _BELLS_LOCK:
        return _BELLS.setdefault(path, (Bell(), Bell()))


async def watch(
    bell: Bell,
    look: Look[T],
    *,
    wait: float,
    poll: float,
    woken: Callable[[], bool] | None = None,
) -> T | None:
    """Call `look` until it finds something, `wait` s have passed or `woken()` holds.

    Between looks we sleep until the bell rings, that time comes, or
    `poll` s pass (to see other processes' commits), whichever is first.
    Whoever makes `woken()` true rings the bell.
    """
    deadline = time.monotonic() + wait
    while True:
        fut = bell.arm()  # armed before looking: a commit in between still wakes us
        try:
            found, next_due = await look()
            left = deadline - time.monotonic()
            if found is not None or left <= 0 or (woken is not None and woken()):
                return found
            if next_due is not None:
                left = min(left, next_due - time.time())
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as the bell rings (a stop would hang).
            await asyncio.wait([fut], timeout=max(min(left, poll), 0.0))
        finally:
            bell.disarm(fut)
            fut.cancel()
