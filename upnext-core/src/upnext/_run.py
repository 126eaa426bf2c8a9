"""`upnext.run`: the blocking entry point, draining on SIGTERM/SIGINT.

Before consuming, it connects with capped exponential backoff: one log line
per failed attempt (URL redacted), and exit code 69 once the worker's
`connect_timeout` has passed without a connection.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

from upnext._backoff import Backoff
from upnext._memory import return_large_frees
from upnext._worker import Worker
from upnext.errors import BrokerUnavailable

__all__ = ["run"]

log = logging.getLogger("upnext.worker")

EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the broker could not be reached within connect_timeout
EXIT_RESTART = 75  # EX_TEMPFAIL: the supervisor should start a fresh process
CONNECT_BACKOFF = 0.2  # seconds before the first reconnect; doubled per attempt...
CONNECT_BACKOFF_MAX = 5.0  # ...up to this cap


def run(worker: Worker) -> int:
    """Run `worker` until SIGTERM or SIGINT, then drain; returns the exit code.

    It first connects, retrying an unreachable broker with backoff (0.2 s,
    doubling, at most 5 s apart) for up to `worker.connect_timeout` seconds.
    The drain stops receiving, releases what has not started, and gives
    in-flight jobs `shutdown_grace` seconds. Uses uvloop when installed.
    Returns 0; 69 when the broker stayed unreachable for `connect_timeout`;
    or 75 when the worker must be restarted (too many abandoned sync threads).
    On glibc it also fixes malloc's mmap threshold at 1 MiB, so that memory
    of large payloads goes back to the OS (`upnext._memory`; set
    UPNEXT_KEEP_MALLOC=1 to leave malloc alone).
    """
    return_large_frees()
    return _loop_runner()(_main(worker))


def _loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's `run` when installed, else asyncio's.

    The worker must not run inside the ``except ImportError`` block: there
    every job's traceback would begin with "No module named 'uvloop'".
    """
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]  # optional: upnext[speed]
    except ImportError:
        return asyncio.run
    runner: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    return runner


def _on_signals(handler: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, handler)


async def _main(worker: Worker) -> int:
    stop = asyncio.Event()
    _on_signals(stop.set)
    if not await connect(worker, stop):
        return 0 if stop.is_set() else EXIT_UNAVAILABLE
    async with worker:
        _on_signals(worker.request_stop)
        if stop.is_set():  # a signal came while connecting
            worker.request_stop()
        await worker.wait_stopped()
        fatal = worker.fatal
    return EXIT_RESTART if fatal else 0


async def connect(worker: Worker, stop: asyncio.Event | None = None) -> bool:
    """Connect `worker`'s client, retrying `BrokerUnavailable` with capped backoff.

    Each failed attempt logs one warning naming the redacted URL, the attempt
    number and the wait before the next. Returns True once connected; False
    when `worker.connect_timeout` seconds passed first (logged as an error)
    or `stop` was set meanwhile.
    """
    loop = asyncio.get_running_loop()
    limit = worker.connect_timeout
    deadline = loop.time() + limit if math.isfinite(limit) else math.inf
    url, attempt = worker.safe_broker_url, 0
    backoff = Backoff(first=CONNECT_BACKOFF, cap=CONNECT_BACKOFF_MAX)
    while True:
        attempt += 1
        try:
            async with asyncio.timeout_at(deadline if math.isfinite(deadline) else None):
                await worker.client()
            return True
        except BrokerUnavailable as exc:
            reason = str(exc)
        except TimeoutError:
            reason = f"no connection within connect_timeout={limit:g} s"
        with suppress(Exception):  # drop the half-made client: the next attempt starts clean
            await worker.aclose()
        pause = min(next(backoff), deadline - loop.time())
        if pause <= 0:
            log.error(
                "connecting to %s failed (attempt %d, giving up after connect_timeout=%g s): %s",
                url,
                attempt,
                limit,
                reason,
            )
            return False
        log.warning(
            "connecting to %s failed (attempt %d, retrying in %.1f s): %s",
            url,
            attempt,
            pause,
            reason,
        )
        if stop is not None:
            with suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
            if stop.is_set():
                return False
        else:
            await asyncio.sleep(pause)
