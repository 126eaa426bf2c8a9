"""The sync twins' way into async code: the worker's loop, or a background loop."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import threading
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from upnext._context import JobScope, current_scope
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = ["Portal"]

T = TypeVar("T")

CLOSE_TIMEOUT = 10.0  # seconds for the background loop's connections to close, and its thread


class Portal:
    """Runs coroutines for blocking callers.

    Inside a sync task the call goes back to the worker's own loop; on any
    other thread without a running loop it goes to one background loop per
    worker, started on first use, which keeps its connections until
    `close` (called by `Worker.aclose` and at interpreter exit).
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # A weak reference: a worker dropped by its program is not kept for atexit.
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` to completion and return its result, blocking this thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise ConfigurationError(
                "a *_sync method was called on a thread running an event loop; await the async one"
            )
        scope = current_scope.get()
        if scope is not None and scope.worker.loop is not None and scope.worker.running:
            loop = scope.worker.loop
        else:
            loop = self._background()
        return asyncio.run_coroutine_threadsafe(_in_scope(coro, scope), loop).result()

    def _background(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"upnext-sync-{self._worker.name}", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
                atexit.register(self._at_exit)
            return self._loop

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the background loop's connections, then stop and close the loop.

        Blocks up to `timeout` seconds for each step. A later sync call
        starts a new background loop. Not for the background loop's own thread.
        """
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
            atexit.unregister(self._at_exit)
        if loop is None or thread is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()

    @property
    def started(self) -> bool:
        """Whether a background loop runs (a sync call was made off the worker's loop)."""
        return self._loop is not None

    def owns(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether `loop` is this portal's background loop."""
        return loop is self._loop

    async def _shutdown(self) -> None:
        """On the background loop: close its client, end what is left running there."""
        await self._worker._aclose_client()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()


def _close_at_exit(ref: weakref.ref[Portal]) -> None:
    portal = ref()
    if portal is not None:
        with contextlib.suppress(Exception):  # exiting: a broker gone by now is no news
            portal.close()


async def _in_scope(coro: Coroutine[Any, Any, T], scope: JobScope | None) -> T:
    """Run `coro` with the caller's job scope, so lineage survives the thread hop."""
    current_scope.set(scope)
    return await coro
