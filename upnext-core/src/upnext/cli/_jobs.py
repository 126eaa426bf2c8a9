"""`upnext jobs list|show`: jobs by status, and one job by id, from a terminal."""

from __future__ import annotations

import argparse
import json
import shlex

from upnext._worker import Worker
from upnext.cli._output import fail, format_time, print_json, table
from upnext.jobs import MAX_JOBS_LIMIT, STATUSES, JobInfo, JobSummary, find_job, list_jobs

__all__ = ["add_jobs_parser", "run_jobs"]


def add_jobs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `jobs` command and its `list` and `show` subcommands."""
    jobs = sub.add_parser("jobs", help="list jobs by status, or show one job")
    actions = jobs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="jobs by status, newest first")
    listing.add_argument("--queue", help="only this queue")
    listing.add_argument("--task", help="only functions whose dotted name contains this")
    listing.add_argument(
        "--status", choices=STATUSES, help="default: active, then recently finished"
    )
    listing.add_argument("--limit", type=int, default=50, help=f"1..{MAX_JOBS_LIMIT}")
    listing.add_argument("--cursor", help="continue a listing (from its 'more:' line)")
    show = actions.add_parser("show", help="one job: status, attempts, lineage, result or error")
    show.add_argument("id", help="the job id")
    show.add_argument("--queue", help="look in this queue only")
    for parser in (listing, show):
        parser.add_argument("--broker", help="broker URL (default: $UPNEXT_BROKER_URL)")
        parser.add_argument("--results", help="result-store URL (default: $UPNEXT_RESULTS_URL)")
        parser.add_argument("--json", action="store_true", help="print JSON")


async def run_jobs(args: argparse.Namespace, worker: Worker) -> int:
    """Dispatch one `jobs` subcommand; the exit code."""
    try:
        if args.action == "list":
            return await _list(args, worker)
        return await _show(args, worker)
    finally:
        await worker.aclose()


def _row(job: JobSummary) -> list[str]:
    when = job.finished_at or job.started_at or job.due_at or job.enqueued_at
    return [
        job.job_id,
        job.status,
        job.queue or "-",
        job.function,
        "-" if job.attempt is None else str(job.attempt),
        job.worker_id or "-",
        format_time(when),
        "-" if job.duration_ms is None else f"{job.duration_ms:.1f}",
        job.error or "",
    ]


async def _list(args: argparse.Namespace, worker: Worker) -> int:
    page = await list_jobs(
        worker,
        status=args.status,
        queue=args.queue,
        task=args.task,
        limit=args.limit,
        cursor=args.cursor,
    )
    if args.json:
        print_json(page.model_dump(mode="json"))
        return 0
    if not page.items:
        print("no jobs" + ("" if page.exact else " in the recent history"))
    else:
        headers = ["ID", "STATUS", "QUEUE", "FUNCTION", "ATTEMPT", "WORKER", "AT (UTC)", "MS"]
        print(table([*headers, "ERROR"], [_row(job) for job in page.items]))
    if not page.exact:
        print("\n(finished jobs: the recent history, about the last 500 per worker, 1 h at most)")
    if page.next_cursor:
        print(f"\nmore: {_next_page(args, page.next_cursor)}")
    return 0


def _next_page(args: argparse.Namespace, cursor: str) -> str:
    """The command for the next page: this one's filters and limit kept (never a URL)."""
    words = ["upnext", "jobs", "list", "--limit", str(args.limit)]
    for flag, value in (("--status", args.status), ("--queue", args.queue), ("--task", args.task)):
        if value:
            words += [flag, value]
    return shlex.join([*words, "--cursor", cursor])


def _details(info: JobInfo) -> str:
    pairs = [
        ("job", info.job_id),
        ("status", info.status),
        ("function", info.function),
        ("queue", info.queue),
        ("attempt", info.attempt if info.attempt is not None else info.attempts),
        ("worker", info.worker_id),
        ("started", f"{format_time(info.started_at)} UTC" if info.started_at else None),
        ("completed", f"{format_time(info.completed_at)} UTC" if info.completed_at else None),
        ("parent", info.parent_id),
        ("root", info.root_id if info.root_id != info.job_id else None),
        ("replay of", info.replay_of),
        ("dead letter", info.dlq_entry_id),
        ("children", " ".join(info.children) if info.children else None),
    ]
    lines = [f"{name:<11} {value}" for name, value in pairs if value is not None]
    if info.error is not None:
        lines.append(f"{'error':<11} {info.error}")
    elif info.status == "complete":
        lines.append(f"{'result':<11} {json.dumps(info.result, default=str)}")
    return "\n".join(lines)


async def _show(args: argparse.Namespace, worker: Worker) -> int:
    info = await find_job(worker, args.id, queue=args.queue)
    if info.status == "unknown":
        return fail(
            f"no job with id {args.id} is known: not queued on a browsable broker, running,"
            " recently finished or dead-lettered"
        )
    if args.json:
        print_json(info.model_dump(mode="json"))
    else:
        print(_details(info))
    return 0
