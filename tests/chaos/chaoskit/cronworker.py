"""The cron chaos worker: one upnext Worker with an every-second cron; run as a subprocess.

``python -m chaoskit.cronworker --url URL --queue Q --ledger FILE --policy P
[--results URL]`` declares the cron ``<queue>.tick`` (``"* * * * * *"``, its
missed-run policy P, overlap allowed so a killed run's lease does not hold
back the next ticks) and runs until SIGTERM. The ledger gets ``A 0`` when the
scheduler starts, and per run ``S <tick>`` and ``D <tick>`` (the tick as whole
Unix seconds, from `scheduled_for`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import upnext

from chaoskit.ledger import Ledger

__all__ = ["RUN_SECONDS", "build", "main"]

RUN_SECONDS = 0.3  # how long a run holds its tick: a kill often catches one in flight


def build(
    url: str, queue: str, ledger: Ledger, policy: str, results: str | None = None
) -> upnext.Worker:
    """A Worker on `queue` whose cron records each run of each tick in `ledger`."""
    worker = upnext.Worker(
        queue, broker=url, results=results, lease=2.0, receive_wait=1.0, load_plugins=False
    )

    @worker.cron(
        "* * * * * *",
        name=f"{queue}.tick",
        missed_run_policy=upnext.MissedRunPolicy[policy],
        allow_overlap=True,
        timeout=30.0,
    )
    async def tick() -> None:
        """Hold the tick `RUN_SECONDS`; the ledger gets its start and its end."""
        context = upnext.get_current_context()
        assert context.scheduled_for is not None
        second = round(context.scheduled_for.timestamp())
        ledger.record("S", second, context.attempt)
        await asyncio.sleep(RUN_SECONDS)
        ledger.record("D", second, context.attempt)

    return worker


async def _serve(worker: upnext.Worker, ledger: Ledger) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        ledger.record("A", 0, 0)  # the scheduler started: ticks before now were missed here
        await stop.wait()


def main(argv: list[str]) -> int:
    """Run one cron worker until SIGTERM (it drains, then exits 0)."""
    parser = argparse.ArgumentParser(prog="chaoskit.cronworker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--ledger", required=True, type=Path)
    parser.add_argument("--policy", required=True, choices=[p.name for p in upnext.MissedRunPolicy])
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(created).3f %(levelname)s %(name)s: %(message)s")
    ledger = Ledger(args.ledger)
    worker = build(args.url, args.queue, ledger, args.policy, args.results)
    asyncio.run(_serve(worker, ledger))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
