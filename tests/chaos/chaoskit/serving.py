"""What a one-task chaos worker process shares: its command line and its life until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import upnext

from chaoskit.ledger import Ledger

__all__ = ["parse", "serve"]


def parse(prog: str, argv: list[str], *, extra: tuple[str, list[str]]) -> argparse.Namespace:
    """``--url --queue --ledger [--results]`` and one required option `extra` with its choices."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--ledger", required=True, type=Path)
    parser.add_argument(extra[0], required=True, choices=extra[1])
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(created).3f %(levelname)s %(name)s: %(message)s")
    return args


def serve(worker: upnext.Worker, ledger: Ledger) -> None:
    """Run `worker` until SIGTERM (it drains, then returns); ``A 0`` once it runs."""

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with worker:
            ledger.record("A", 0, 0)  # started: for a cron, ticks before now were missed here
            await stop.wait()

    asyncio.run(run())
