"""`upnext dlq list|show|replay|delete|purge`: the dead-letter queue from a terminal."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import AsyncIterator

from upnext._dlq import DeadLetterEntry, DeadLetterQueue
from upnext._worker import Worker
from upnext.cli._output import Progress, fail, format_time, print_json, table
from upnext.errors import DeadLetterNotFound, UnsupportedOperation

__all__ = ["confirm_purge", "run_dlq"]

PAGE = 500


async def run_dlq(args: argparse.Namespace, worker: Worker) -> int:
    """Dispatch one `dlq` subcommand; the exit code."""
    try:
        handler = {
            "list": _list,
            "show": _show,
            "replay": _replay,
            "delete": _delete,
            "purge": _purge,
        }[args.action]
        return await handler(args, worker.dlq)
    finally:
        await worker.aclose()


def _summary(entry: DeadLetterEntry) -> list[str]:
    error = str(entry.error) if entry.error else entry.reason
    return [
        entry.id,
        format_time(entry.failed_at),
        entry.queue,
        entry.function,
        str(len(entry.attempts)),
        error,
    ]


async def _list(args: argparse.Namespace, dlq: DeadLetterQueue) -> int:
    page = await dlq.list(
        limit=args.limit,
        cursor=args.cursor,
        queue=args.queue,
        function=args.function,
        job_id=args.job_id,
    )
    if args.json:
        print_json(page.model_dump(mode="json"))
        return 0
    if not page.items:
        print("no dead-letter entries")
        return 0
    headers = ["ID", "FAILED AT (UTC)", "QUEUE", "FUNCTION", "ATTEMPTS", "ERROR"]
    print(table(headers, [_summary(e) for e in page.items]))
    if page.next_cursor:
        print(f"\nmore: {_next_page(args, page.next_cursor)}")
    return 0


def _next_page(args: argparse.Namespace, cursor: str) -> str:
    """The command for the next page: this one's filters and limit kept (never a URL)."""
    words = ["upnext", "dlq", "list", "--limit", str(args.limit)]
    kept = (("--queue", args.queue), ("--function", args.function), ("--job-id", args.job_id))
    for flag, value in kept:
        if value:
            words += [flag, value]
    return shlex.join([*words, "--cursor", cursor])


def _details(entry: DeadLetterEntry) -> str:
    lines = [
        f"entry     {entry.id}",
        f"job       {entry.job_id}",
        f"function  {entry.function}",
        f"queue     {entry.queue}",
        f"reason    {entry.reason}",
        f"failed at {format_time(entry.failed_at)} UTC",
    ]
    if entry.replay_of:
        lines.append(f"replay of {entry.replay_of}")
    payload = entry.payload.model_dump(mode="json") if entry.payload else None
    lines.append(
        f"payload   {json.dumps(payload) if payload else '(undecodable: ' + str(entry.raw) + ')'}"
    )
    if entry.error:
        lines += ["", f"error     {entry.error}"]
        if entry.error.traceback:
            lines += ["", entry.error.traceback.rstrip()]
    if entry.attempts:
        rows = [
            [
                str(a.number),
                a.outcome,
                a.worker or "-",
                format_time(a.started),
                format_time(a.finished),
                a.error or "",
            ]
            for a in entry.attempts
        ]
        lines += ["", table(["#", "OUTCOME", "WORKER", "STARTED", "FINISHED", "ERROR"], rows)]
    return "\n".join(lines)


async def _find(args: argparse.Namespace, dlq: DeadLetterQueue) -> DeadLetterEntry | None:
    """The entry `args.id` names, else the newest entry of the job with that id."""
    try:
        return await dlq.get(args.id)
    except DeadLetterNotFound:
        pass
    page = await dlq.list(limit=2, queue=args.queue, job_id=args.id)
    if len(page.items) > 1:
        print(
            f"job {args.id} died more than once; showing its newest entry"
            f" (all: upnext dlq list --job-id {shlex.quote(args.id)})",
            file=sys.stderr,
        )
    return page.items[0] if page.items else None


async def _show(args: argparse.Namespace, dlq: DeadLetterQueue) -> int:
    entry = await _find(args, dlq)
    if entry is None:
        where = f" in queue {args.queue}" if args.queue else ""
        return fail(
            f"no dead-letter entry with id or job id {args.id}{where}"
            " (already replayed or deleted?)"
        )
    if args.json:
        print_json(entry.model_dump(mode="json"))
    else:
        print(_details(entry))
    return 0


async def _matching(args: argparse.Namespace, dlq: DeadLetterQueue) -> AsyncIterator[str]:
    """Ids of every entry matching --queue/--function/--job-id, page by page."""
    cursor = None
    while True:
        page = await dlq.list(
            limit=PAGE,
            cursor=cursor,
            queue=args.queue,
            function=args.function,
            job_id=args.job_id,
        )
        for entry in page.items:
            yield entry.id
        cursor = page.next_cursor
        if cursor is None:
            return


async def _replay(args: argparse.Namespace, dlq: DeadLetterQueue) -> int:
    if bool(args.ids) == bool(args.all):
        return fail("give entry ids, or --all (with --queue/--function/--job-id to narrow it)", 2)
    ids = args.ids or [i async for i in _matching(args, dlq)]
    progress = Progress("replaying", len(ids))
    replayed: dict[str, str] = {}
    missing: list[str] = []
    try:
        for entry_id in ids:
            try:
                replayed[entry_id] = await dlq.replay(entry_id)
            except (DeadLetterNotFound, UnsupportedOperation) as exc:
                missing.append(entry_id)
                if args.ids:
                    why = "no such entry (already replayed or deleted?)"
                    if isinstance(exc, UnsupportedOperation):
                        why = str(exc)
                    print(f"skipped {entry_id}: {why}", file=sys.stderr)
            progress.step()
    finally:
        progress.close()
    if args.json:
        print_json({"replayed": replayed, "skipped": missing})
    else:
        for old, new in replayed.items():
            print(f"replayed {old} as job {new}")
        print(f"{len(replayed)} replayed, {len(missing)} skipped")
    return 1 if missing and args.ids else 0


async def _delete(args: argparse.Namespace, dlq: DeadLetterQueue) -> int:
    code = 0
    for entry_id in args.ids:
        try:
            await dlq.delete(entry_id)
        except DeadLetterNotFound:
            code = fail(f"no dead-letter entry {entry_id} (already replayed or deleted?)")
            continue
        if not args.json:
            print(f"deleted {entry_id}")
    if args.json:
        print_json({"deleted": args.ids if code == 0 else []})
    return code


def _scope(args: argparse.Namespace) -> str:
    return f"queue {args.queue!r}" if args.queue else "every queue"


def confirm_purge(args: argparse.Namespace) -> int | None:
    """Before a purge: None to go ahead, else the exit code (no --yes and no yes typed)."""
    if args.action != "purge" or args.yes:
        return None
    if not sys.stdin.isatty():
        return fail(f"purge deletes every entry of {_scope(args)}; confirm with --yes", 2)
    answer = input(f"Delete every dead-letter entry of {_scope(args)}? [y/N] ")
    return None if answer.strip().lower() in ("y", "yes") else fail("purge cancelled")


async def _purge(args: argparse.Namespace, dlq: DeadLetterQueue) -> int:
    scope = _scope(args)
    progress = Progress(f"purging {scope}", None)
    try:
        purged = await dlq.purge(args.queue)
        progress.step(purged)
    finally:
        progress.close()
    if args.json:
        print_json({"purged": purged})
    else:
        print(f"purged {purged} entries of {scope}")
    return 0
