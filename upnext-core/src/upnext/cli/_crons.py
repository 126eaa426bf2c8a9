"""`upnext cron list|disable|enable`: the crons of a broker, from a terminal."""

from __future__ import annotations

import argparse

from upnext._worker import Worker
from upnext.cli._output import format_time, print_json, table
from upnext.crons import CronInfo, disable_cron, enable_cron, list_crons

__all__ = ["add_cron_parser", "run_cron"]


def add_cron_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `cron` command and its `list`, `disable` and `enable` subcommands."""
    cron = sub.add_parser("cron", help="list crons, disable or enable one")
    actions = cron.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every cron: schedule, next run, last run")
    off = actions.add_parser("disable", help="stop a cron firing on every worker")
    on = actions.add_parser("enable", help="let a cron fire again from its next tick")
    for parser in (off, on):
        parser.add_argument("name", help="the cron's name (its task's)")
    for parser in (listing, off, on):
        parser.add_argument("--broker", help="broker URL (default: $UPNEXT_BROKER_URL)")
        parser.add_argument("--results", help="result-store URL (default: $UPNEXT_RESULTS_URL)")
        parser.add_argument("--json", action="store_true", help="print JSON")


def _row(cron: CronInfo) -> list[str]:
    run = cron.last_run
    return [
        cron.name,
        cron.schedule + (f" ({cron.timezone})" if cron.timezone else ""),
        "yes" if cron.enabled else "no",
        format_time(cron.next_run),
        format_time(run.scheduled_for if run is not None else None),
        run.status if run is not None else "-",
    ]


async def run_cron(args: argparse.Namespace, worker: Worker) -> int:
    """Dispatch one `cron` subcommand; the exit code (ConfigurationError for an unknown name)."""
    try:
        if args.action != "list":
            await (enable_cron if args.action == "enable" else disable_cron)(worker, args.name)
        crons = await list_crons(worker)  # ConfigurationError without a state store
    finally:
        await worker.aclose()
    if args.action != "list":
        crons = [cron for cron in crons if cron.name == args.name]
    if args.json:
        print_json({"crons": [cron.model_dump(mode="json") for cron in crons]})
    elif not crons:
        print("no crons")
    else:
        headers = ["NAME", "SCHEDULE", "ENABLED", "NEXT RUN (UTC)", "LAST RUN (UTC)", "OUTCOME"]
        print(table(headers, [_row(cron) for cron in crons], max_width=10_000))
    return 0
