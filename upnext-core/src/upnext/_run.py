"""`upnext.run`: the blocking entry point, draining on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

from upnext._worker import Worker

__all__ = ["run"]

log = logging.getLogger("upnext.worker")

EXIT_RESTART = 75  # EX_TEMPFAIL: the supervisor should start a fresh process


def run(worker: Worker) -> int:
    """Run `worker` until SIGTERM or SIGINT, then drain; returns the exit code.

    The drain stops receiving, releases what has not started, and gives
    in-flight jobs `shutdown_grace` seconds. Uses uvloop when installed.
    Returns 0, or 75 when the worker must be restarted (too many abandoned
    sync threads).
    """
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]  # optional: upnext[speed]
    except ImportError:
        return asyncio.run(_main(worker))
    code: int = uvloop.run(_main(worker))
    return code


async def _main(worker: Worker) -> int:
    loop = asyncio.get_running_loop()
    async with worker:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(sig, worker.request_stop)
        await worker.wait_stopped()
        log.info("worker %s draining", worker.name)
        fatal = worker.fatal
    return EXIT_RESTART if fatal else 0
