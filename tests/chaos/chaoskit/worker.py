"""The chaos worker: one upnext Worker whose tasks write to the ledger; run as a subprocess.

``python -m chaoskit.worker --url URL --queue Q --ledger FILE [...]`` runs it
under `upnext.run` (SIGTERM drains). The test process builds the same Worker
to submit jobs, so task names and options always match.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import upnext

from chaoskit.ledger import Ledger

__all__ = ["Options", "Tasks", "build", "main"]


@dataclass(frozen=True, slots=True)
class Options:
    """How a chaos worker is configured (the same in every process of a run)."""

    concurrency: int = 8
    lease: float = 2.0
    shutdown_grace: float = 25.0
    max_lost_runs: int = 3
    retries: int = 5
    retry_delay: float = 0.2
    receive_wait: float = 1.0
    block_timeout: float = 60.0
    connect_timeout: float = 60.0

    def argv(self) -> list[str]:
        """These options as command-line arguments for `main`."""
        return [f"--{name.replace('_', '-')}={getattr(self, name)}" for name in self.__slots__]


@dataclass(frozen=True, slots=True)
class Tasks:
    """The tasks of a chaos worker, for submitting from the test."""

    work: upnext.Task[..., None]
    crash: upnext.Task[..., None]
    fail: upnext.Task[..., None]
    block: upnext.Task[..., None]


def build(url: str, queue: str, ledger: Ledger, options: Options) -> tuple[upnext.Worker, Tasks]:
    """A Worker on `queue` with the chaos tasks, each recording its runs in `ledger`."""
    worker = upnext.Worker(
        queue,
        broker=url,
        concurrency=options.concurrency,
        lease=options.lease,
        shutdown_grace=options.shutdown_grace,
        max_lost_runs=options.max_lost_runs,
        receive_wait=options.receive_wait,
        connect_timeout=options.connect_timeout,
        load_plugins=False,
    )

    @worker.task(name="chaos.work", result_ttl=60, timeout=60.0)
    async def work(i: int, ms: float = 10.0) -> None:
        """Sleep `ms` milliseconds; the ledger gets a start and a done line."""
        attempt = upnext.get_current_context().attempt
        ledger.record("S", i, attempt)
        await asyncio.sleep(ms / 1000)
        ledger.record("D", i, attempt)

    @worker.task(name="chaos.crash", result_ttl=60, timeout=60.0)
    async def crash(i: int) -> None:
        """Kill this worker process outright, as a segfaulting extension would."""
        ledger.record("S", i, upnext.get_current_context().attempt)
        os._exit(3)

    @worker.task(
        name="chaos.fail",
        retries=options.retries,
        retry_delay=options.retry_delay,
        retry_backoff=1.0,
        timeout=60.0,
        result_ttl=60,
    )
    async def fail(i: int) -> None:
        """Always raise; the ledger gets one F line per attempt."""
        ledger.record("F", i, upnext.get_current_context().attempt)
        raise RuntimeError(f"job {i} always fails")

    @worker.task(name="chaos.block", timeout=options.block_timeout, result_ttl=60)
    def block(i: int, seconds: float, how: str = "sleep") -> None:
        """A sync task: hold this thread `seconds` in time.sleep or a busy loop; E at the end."""
        attempt = upnext.get_current_context().attempt
        ledger.record("S", i, attempt)
        until = time.monotonic() + seconds
        if how == "sleep":
            time.sleep(seconds)
        else:
            while time.monotonic() < until:  # holds the GIL but for the switch interval
                pass
        ledger.record("E", i, attempt)

    return worker, Tasks(work=work, crash=crash, fail=fail, block=block)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(prog="chaoskit.worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--ledger", required=True, type=Path)
    defaults = Options()
    for name in Options.__slots__:
        value: Any = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    return args, Options(**{name: getattr(args, name) for name in Options.__slots__})


def main(argv: list[str]) -> int:
    """Run one chaos worker until SIGTERM; the exit code of `upnext.run`."""
    args, options = _parse(argv)
    # Timestamped lines on stderr, so a test can time what the worker noticed.
    logging.basicConfig(format="%(created).3f %(levelname)s %(name)s: %(message)s")
    worker, _ = build(args.url, args.queue, Ledger(args.ledger), options)
    return upnext.run(worker)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
