"""The `upnext` command: run workers and the server; workers, jobs, crons, queues, the DLQ.

Built on argparse, so every command but `upnext server` works without the
``server`` extra. Exit codes: 0 success, 1 failure (one ``error:`` line on
stderr), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

from upnext._worker import ENV_BROKER, ENV_RESULTS, Worker
from upnext.cli import _commands
from upnext.cli._crons import add_cron_parser, run_cron
from upnext.cli._dlq import confirm_purge, run_dlq
from upnext.cli._jobs import add_jobs_parser, run_jobs
from upnext.cli._load import refuse_memory
from upnext.cli._logging import LEVELS
from upnext.cli._output import fail
from upnext.cli._queues import add_queue_parser, run_queue
from upnext.cli._schema import schema
from upnext.cli._workers import run_workers
from upnext.errors import UpNextError

__all__ = ["build_parser", "main"]


def _limit(text: str) -> int:
    """A page size between 1 and 500."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 500:
        raise argparse.ArgumentTypeError(f"must be between 1 and 500, got {value}")
    return value


def _dlq_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="browse, replay, delete and purge dead-lettered jobs")
    dlq.add_argument("--broker", help="broker URL (default: $UPNEXT_BROKER_URL)")
    dlq.add_argument("--results", help="result-store URL (default: $UPNEXT_RESULTS_URL)")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--queue", help="only this queue")
    filters.add_argument(
        "--function", help="only this function (its dotted name or a dotted suffix of it)"
    )
    filters.add_argument("--job-id", help="only the entries of this job id")
    lst = actions.add_parser("list", parents=[common, filters], help="entries, newest first")
    lst.add_argument("--limit", type=_limit, default=50, metavar="1..500")
    lst.add_argument("--cursor", help="continue after a previous page")
    show = actions.add_parser("show", parents=[common], help="one entry (by id or job id) in full")
    show.add_argument("id", help="an entry id, or the id of the job that died")
    show.add_argument("--queue", help="look for a job id in this queue only")
    rep = actions.add_parser("replay", parents=[common, filters], help="enqueue entries again")
    rep.add_argument("ids", nargs="*", metavar="ID")
    rep.add_argument("--all", action="store_true", help="every entry matching the filters")
    rm = actions.add_parser("delete", parents=[common], help="remove entries")
    rm.add_argument("ids", nargs="+", metavar="ID")
    purge = actions.add_parser("purge", parents=[common], help="remove every entry")
    purge.add_argument("--queue", help="only this queue's entries")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `upnext` command."""
    parser = argparse.ArgumentParser(prog="upnext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wrk = sub.add_parser("worker", help="run a worker (module:attr) until SIGTERM")
    wrk.add_argument("target", metavar="module:worker")
    wrk.add_argument("--concurrency", type=int, help="jobs run at once")
    wrk.add_argument("--queues", action="append", help="queues to consume (comma-separated)")
    wrk.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="keep retrying an unreachable broker this long, then exit 69 (default 60)",
    )
    wrk.add_argument(
        "--log-level", default="info", choices=LEVELS, help="upnext's log level (default info)"
    )
    wrk.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object per line (default text)",
    )
    wrk.add_argument("--metrics", action="store_true", help="count jobs for the server's /metrics")
    wrk.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="count jobs and serve them in Prometheus format on this port (metrics extra)",
    )
    wrk.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of --metrics-port (default 127.0.0.1)"
    )
    srv = sub.add_parser("server", help="serve the REST API and dashboard (server extra)")
    srv.add_argument("--broker", help="broker URL (default: $UPNEXT_BROKER_URL)")
    srv.add_argument("--results", help="result-store URL when the broker keeps none")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--token", help="API token (default: $UPNEXT_API_TOKEN)")
    srv.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback host without a token"
    )
    srv.add_argument(
        "--allowed-host",
        action="append",
        metavar="HOST[:PORT]",
        help="also serve requests for this Host (repeatable; loopback names always;"
        " default: $UPNEXT_ALLOWED_HOSTS)",
    )
    srv.add_argument("--queue", action="append", help="a queue to show (repeatable)")
    srv.add_argument("--app", metavar="module:worker", help="show this worker's queues")
    srv.add_argument(
        "--management-url",
        metavar="URL",
        help="RabbitMQ: list queues and depths from this management API,"
        " http://user:pass@host:15672 (default: $UPNEXT_MANAGEMENT_URL)",
    )
    srv.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _dlq_parser(sub)
    wks = sub.add_parser("workers", help="live workers: heartbeats and running jobs")
    wks.add_argument("--broker", help="broker URL (default: $UPNEXT_BROKER_URL)")
    wks.add_argument("--results", help="result-store URL (default: $UPNEXT_RESULTS_URL)")
    wks.add_argument("--json", action="store_true", help="print JSON")
    add_jobs_parser(sub)
    add_cron_parser(sub)
    add_queue_parser(sub)
    bk = sub.add_parser("backends", help="installed URL schemes and their distributions")
    bk.add_argument("--json", action="store_true", help="print JSON")
    sbm = sub.add_parser("submit", help="submit one job of a task (module:task)")
    sbm.add_argument("target", metavar="module:task")
    sbm.add_argument(
        "--kw", action="append", metavar="KEY=VALUE", help="an argument (JSON or text)"
    )
    sbm.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the result")
    sbm.add_argument("--json", action="store_true", help="print JSON")
    sch = sub.add_parser("schema", help="print the SQL a backend applies at connect (PostgreSQL)")
    sch.add_argument("--broker", help="broker URL (default: $UPNEXT_BROKER_URL)")
    return parser


def _dlq(args: argparse.Namespace) -> int:
    broker = args.broker or os.environ.get(ENV_BROKER)
    if not broker:
        return fail("no broker: pass --broker URL or set UPNEXT_BROKER_URL", 2)
    refuse_memory(broker, "upnext dlq")
    refused = confirm_purge(args)
    if refused is not None:
        return refused
    worker = Worker(
        "upnext-cli",
        broker,
        results=args.results or os.environ.get(ENV_RESULTS),
        load_plugins=False,
    )
    return asyncio.run(run_dlq(args, worker))


def _workers(args: argparse.Namespace) -> int:
    broker = args.broker or os.environ.get(ENV_BROKER)
    if not broker:
        return fail("no broker: pass --broker URL or set UPNEXT_BROKER_URL", 2)
    refuse_memory(broker, "upnext workers")
    worker = Worker(
        "upnext-cli",
        broker,
        results=args.results or os.environ.get(ENV_RESULTS),
        load_plugins=False,
    )
    return asyncio.run(run_workers(args, worker))


def _jobs(args: argparse.Namespace) -> int:
    broker = args.broker or os.environ.get(ENV_BROKER)
    if not broker:
        return fail("no broker: pass --broker URL or set UPNEXT_BROKER_URL", 2)
    refuse_memory(broker, "upnext jobs")
    worker = Worker(
        "upnext-cli",
        broker,
        results=args.results or os.environ.get(ENV_RESULTS),
        load_plugins=False,
    )
    return asyncio.run(run_jobs(args, worker))


def _on_broker(
    args: argparse.Namespace,
    command: str,
    run: Callable[[argparse.Namespace, Worker], Coroutine[Any, Any, int]],
) -> int:
    """Run a command needing only a broker (and its state) with a throwaway worker."""
    broker = args.broker or os.environ.get(ENV_BROKER)
    if not broker:
        return fail("no broker: pass --broker URL or set UPNEXT_BROKER_URL", 2)
    refuse_memory(broker, command)
    worker = Worker(
        "upnext-cli",
        broker,
        results=args.results or os.environ.get(ENV_RESULTS),
        load_plugins=False,
    )
    return asyncio.run(run(args, worker))


def _cron(args: argparse.Namespace) -> int:
    return _on_broker(args, "upnext cron", run_cron)


def _queue(args: argparse.Namespace) -> int:
    return _on_broker(args, "upnext queue", run_queue)


def _scrub(message: str, urls: Sequence[str | None]) -> str:
    """Hide any password of the URLs in use (backends already do; this is a second guard)."""
    for url in urls:
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            password = None
        if password:
            message = message.replace(password, "***")
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `upnext` command; the exit code."""
    args = build_parser().parse_args(argv)
    handlers = {
        "worker": _commands.worker,
        "server": _commands.server,
        "dlq": _dlq,
        "workers": _workers,
        "jobs": _jobs,
        "cron": _cron,
        "queue": _queue,
        "backends": _commands.backends,
        "submit": _commands.submit,
        "schema": schema,
    }
    urls = [
        getattr(args, "broker", None),
        getattr(args, "results", None),
        getattr(args, "management_url", None),
        *_commands.env_urls(),
    ]
    try:
        return handlers[args.command](args)
    except UpNextError as exc:
        return fail(_scrub(str(exc) or type(exc).__name__, urls))
    except KeyboardInterrupt:
        return fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
