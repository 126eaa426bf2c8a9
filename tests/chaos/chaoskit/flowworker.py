"""The flow-control worker: one upnext Worker whose task has a limit; run as a subprocess.

``python -m chaoskit.flowworker --url URL --queue Q --ledger FILE --mode rate|tenant
[--results URL]`` runs until SIGTERM. ``rate``: task ``<queue>.work(i)`` with
``rate_limit="10/s"``. ``tenant``: ``<queue>.work(tenant, i)`` with
``max_concurrency=2`` per tenant, each run holding `HOLD` s. The ledger gets
``A 0`` once the worker runs, ``S i`` and ``D i`` around each body, and
``Y i`` for each settle that held a job back (a delay, no attempt).
"""

from __future__ import annotations

import asyncio
import sys

import upnext
from upnext.middleware import Job, Middleware, Settlement

from chaoskit.ledger import Ledger
from chaoskit.serving import parse, serve

__all__ = ["HOLD", "RATE", "TENANT_LIMIT", "build", "main"]

RATE = 10  # starts a second
TENANT_LIMIT = 2  # running jobs per tenant
HOLD = 0.1  # seconds a tenant job runs


class HeldBack(Middleware):
    """Records each settle that delayed a job without running it (what a limit costs)."""

    settles_inline = True

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        if settlement.status == "scheduled" and job.kwargs is not None:
            self.ledger.record("Y", int(job.kwargs.get("i", -1)), job.attempt)


def build(url: str, queue: str, ledger: Ledger, mode: str, results: str | None) -> upnext.Worker:
    """A Worker on `queue` whose one task is limited as `mode` says."""
    worker = upnext.Worker(
        queue,
        broker=url,
        results=results,
        lease=5.0,
        receive_wait=1.0,
        load_plugins=False,
        middleware=[HeldBack(ledger)],
    )
    if mode == "rate":

        @worker.task(name=f"{queue}.work", rate_limit=f"{RATE}/s", result_ttl=0.0)
        async def work(i: int) -> None:
            ledger.record("S", i, upnext.get_current_context().attempt)
            ledger.record("D", i, upnext.get_current_context().attempt)

    else:

        @worker.task(
            name=f"{queue}.work",
            max_concurrency=TENANT_LIMIT,
            concurrency_key="{tenant}",
            result_ttl=0.0,
        )
        async def work_for(tenant: str, i: int) -> None:
            ledger.record("S", i, upnext.get_current_context().attempt)
            await asyncio.sleep(HOLD)
            ledger.record("D", i, upnext.get_current_context().attempt)

    return worker


def main(argv: list[str]) -> int:
    """Run one flow worker until SIGTERM (it drains, then exits 0)."""
    args = parse("chaoskit.flowworker", argv, extra=("--mode", ["rate", "tenant"]))
    ledger = Ledger(args.ledger)
    serve(build(args.url, args.queue, ledger, args.mode, args.results), ledger)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
