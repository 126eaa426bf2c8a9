"""The cron chaos worker: one upnext Worker with an every-second cron; run as a subprocess.

``python -m chaoskit.cronworker --url URL --queue Q --ledger FILE --policy P
[--results URL]`` declares the cron ``<queue>.tick`` (``"* * * * * *"``, its
missed-run policy P, overlap allowed so a killed run's lease does not hold
back the next ticks) and runs until SIGTERM. The ledger gets ``A 0`` when the
scheduler starts, and per run ``S <tick>`` and ``D <tick>`` (the tick as whole
Unix seconds, from `scheduled_for`).
"""

from __future__ import annotations

import asyncio
import sys

import upnext

from chaoskit.ledger import Ledger
from chaoskit.serving import parse, serve

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


def main(argv: list[str]) -> int:
    """Run one cron worker until SIGTERM (it drains, then exits 0)."""
    args = parse(
        "chaoskit.cronworker", argv, extra=("--policy", [p.name for p in upnext.MissedRunPolicy])
    )
    ledger = Ledger(args.ledger)
    serve(build(args.url, args.queue, ledger, args.policy, args.results), ledger)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
