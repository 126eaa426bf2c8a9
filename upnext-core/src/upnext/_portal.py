"""The sync twins' way into async code: the worker's loop, or a background loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from upnext._context import JobScope, current_scope
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = ["Portal"]

T = TypeVar("T")


class Portal:
    """Runs coroutines for blocking callers.

    Inside a sync task the call goes back to the worker's own loop; on any
    other thread without a running loop it goes to one background loop per
    worker, started on first use, which keeps its connections.
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

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
                self._loop = loop
            return self._loop


async def _in_scope(coro: Coroutine[Any, Any, T], scope: JobScope | None) -> T:
    """Run `coro` with the caller's job scope, so lineage survives the thread hop."""
    current_scope.set(scope)
    return await coro
