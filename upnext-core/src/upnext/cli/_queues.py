"""`upnext queue list|pause|resume`: pausing a queue of a broker, from a terminal."""

from __future__ import annotations

import argparse

from upnext._worker import Worker
from upnext.cli._output import format_time, print_json, table
from upnext.queues import QueuePause, pause_queue, paused_queues, resume_queue

__all__ = ["add_queue_parser", "run_queue"]


def add_queue_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `queue` command and its `list`, `pause` and `resume` subcommands."""
    queue = sub.add_parser("queue", help="list paused queues, pause or resume one")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every paused queue: when and why")
    off = actions.add_parser("pause", help="stop a queue's jobs starting on every worker")
    on = actions.add_parser("resume", help="let a paused queue's jobs start again")
    for parser in (off, on):
        parser.add_argument("name", help="the queue's name")
    off.add_argument("--reason", help="why (shown beside the pause)")
    for parser in (listing, off, on):
        parser.add_argument("--broker", help="broker URL (default: $UPNEXT_BROKER_URL)")
        parser.add_argument("--results", help="result-store URL (default: $UPNEXT_RESULTS_URL)")
        parser.add_argument("--json", action="store_true", help="print JSON")


def _row(pause: QueuePause) -> list[str]:
    return [pause.queue, format_time(pause.paused_at), pause.reason or "-"]


async def run_queue(args: argparse.Namespace, worker: Worker) -> int:
    """Dispatch one `queue` subcommand; the exit code (ConfigurationError without state)."""
    try:
        if args.action == "pause":
            await pause_queue(worker, args.name, reason=args.reason)
        elif args.action == "resume":
            await resume_queue(worker, args.name)
        pauses = await paused_queues(worker)
    finally:
        await worker.aclose()
    if args.action != "list":
        pauses = [pause for pause in pauses if pause.queue == args.name]
    if args.json:
        print_json({"paused": [pause.model_dump(mode="json") for pause in pauses]})
    elif args.action == "resume":
        print(f"queue {args.name} resumed" if not pauses else f"queue {args.name} still paused")
    elif not pauses:
        print("no paused queues")
    else:
        headers = ["QUEUE", "PAUSED AT (UTC)", "REASON"]
        print(table(headers, [_row(pause) for pause in pauses], max_width=10_000))
    return 0
