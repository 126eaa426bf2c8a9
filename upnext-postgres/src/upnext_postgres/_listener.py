"""One LISTEN connection per broker, shared by every blocked receive and result wait.

A blocked call registers a `Waiter` and holds no connection. Notifications
on the jobs channel (``"<delay> <queue>"``) wake the waiters of that queue at
once, or arm a local timer for the job's due time when the delay is
positive; notifications on the results channel wake the waiters of each job
id they carry. Losing the connection wakes everyone: they query again, and
the next `ensure` reconnects (raising `BrokerUnavailable` if it cannot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg

from upnext_postgres._errors import bounded
from upnext_postgres.schema import Names

__all__ = ["Listener", "Waiter"]


class Waiter:
    """A wake-up flag for one blocked call, with an optional timer."""

    __slots__ = ("_event", "_loop", "_timer")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        """Wake the call now."""
        self._event.set()

    def wake_in(self, delay: float) -> None:
        """Wake the call `delay` s from now, unless a timer is set to fire sooner."""
        when = self._loop.time() + delay
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Return when woken or after `timeout` s, whichever is first; then re-arm."""
        if not self._event.is_set():
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._event.wait()
            except TimeoutError:
                pass
        self._event.clear()

    def close(self) -> None:
        """Drop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Listener:
    """The shared LISTEN connection and the waiters it wakes."""

    def __init__(self, dsn: str, names: Names, *, connect_timeout: float, where: str) -> None:
        self._dsn = dsn
        self._names = names
        self._timeout = connect_timeout
        self._where = where
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._lock = asyncio.Lock()
        self._queues: dict[str, set[Waiter]] = {}
        self._jobs: dict[str, set[Waiter]] = {}
        # A connection that died without closing (a network partition) would
        # swallow notifications for ever: ping it now and then while in use.
        self.ping_every = 30.0
        self.ping_timeout = 5.0
        self._ping_task: asyncio.Task[None] | None = None

    def live(self) -> bool:
        """True while the LISTEN connection is open."""
        return self._conn is not None and not self._conn.is_closed()

    async def ensure(self) -> None:
        """Open the LISTEN connection if it is not open; `BrokerUnavailable` if it can't."""
        if self.live():
            return
        # The lock's wait and LISTEN (no statement timeout here) are bounded too.
        limit = self._timeout + self.ping_timeout
        async with bounded(self._where, "listen", limit), self._lock:
            if self.live():
                return
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
            try:
                await conn.add_listener(self._names.jobs_channel, self._on_jobs)
                await conn.add_listener(self._names.results_channel, self._on_results)
            except BaseException:
                conn.terminate()
                raise
            conn.add_termination_listener(self._on_lost)
            self._conn = conn
        # Anything sent while we were not listening is lost: make everyone look.
        self._wake_all()

    async def _pinger(self) -> None:
        # Runs while anyone waits: one SELECT 1 per ping_every on the LISTEN connection.
        try:
            while self._queues or self._jobs:
                await asyncio.sleep(self.ping_every)
                conn = self._conn
                if conn is None or conn.is_closed():
                    continue
                try:
                    async with asyncio.timeout(self.ping_timeout):
                        await conn.fetchval("SELECT 1")
                except Exception:
                    conn.terminate()  # runs _on_lost: all wake, the next ensure reconnects
        finally:
            if self._ping_task is asyncio.current_task():
                self._ping_task = None

    @contextmanager
    def watching_queues(self, queues: Sequence[str]) -> Iterator[Waiter]:
        """A waiter woken by notifications for any of `queues`, for the block's duration."""
        waiter = Waiter()
        with self._registered(self._queues, queues, waiter):
            yield waiter

    @contextmanager
    def watching_job(self, job_id: str) -> Iterator[Waiter]:
        """A waiter woken when a result for `job_id` is written."""
        waiter = Waiter()
        with self._registered(self._jobs, (job_id,), waiter):
            yield waiter

    @contextmanager
    def _registered(
        self, table: dict[str, set[Waiter]], keys: Iterable[str], waiter: Waiter
    ) -> Iterator[None]:
        keys = list(keys)
        for key in keys:
            table.setdefault(key, set()).add(waiter)
        if self._ping_task is None:
            self._ping_task = asyncio.get_running_loop().create_task(self._pinger())
        try:
            yield
        finally:
            waiter.close()
            for key in keys:
                waiters = table.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del table[key]

    def _on_jobs(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        delay_text, _, queue = str(payload).partition(" ")
        waiters = self._queues.get(queue)
        if not waiters:
            return
        try:
            delay = float(delay_text)
        except ValueError:
            delay = 0.0
        for waiter in waiters:
            if delay <= 0:
                waiter.wake()
            else:
                waiter.wake_in(delay)

    def _on_results(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        for job_id in str(payload).split("\n"):
            for waiter in self._jobs.get(job_id, ()):
                waiter.wake()

    def _on_lost(self, conn: Any) -> None:
        if conn is self._conn:
            self._conn = None
        self._wake_all()

    def wake_queue_waiters(self) -> None:
        """Wake every waiter on a queue (the receives in flight), not those on a job."""
        for waiters in self._queues.values():
            for waiter in waiters:
                waiter.wake()

    def _wake_all(self) -> None:
        for table in (self._queues, self._jobs):
            for waiters in table.values():
                for waiter in waiters:
                    waiter.wake()

    async def aclose(self) -> None:
        """Close the LISTEN connection and wake every waiter."""
        if self._ping_task is not None:
            self._ping_task.cancel()
            self._ping_task = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._on_lost)
            try:
                async with asyncio.timeout(2.0):  # not wait_for: it can swallow a cancel
                    await conn.close()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
        self._wake_all()
