"""`upnext worker`, `server`, `backends` and `submit`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from importlib.metadata import entry_points

from upnext._discovery import BROKER_GROUP, RESULT_STORE_GROUP
from upnext._run import run
from upnext._task import Task
from upnext._worker import ENV_BROKER, ENV_RESULTS, Worker
from upnext.broker.redact import redact_url
from upnext.cli._load import load_object, refuse_memory
from upnext.cli._logging import worker_logging
from upnext.cli._output import fail, print_json, table
from upnext.errors import ConfigurationError

__all__ = ["ENV_MANAGEMENT", "backends", "server", "submit", "worker"]

ENV_MANAGEMENT = "UPNEXT_MANAGEMENT_URL"


def _worker_at(target: str) -> Worker:
    obj = load_object(target)
    if not isinstance(obj, Worker):
        raise ConfigurationError(f"{target} is a {type(obj).__name__}, not an upnext.Worker")
    return obj


def worker(args: argparse.Namespace) -> int:
    """Run a Worker until SIGTERM/SIGINT, as `upnext.run` does."""
    target = _worker_at(args.target)
    refuse_memory(target.broker_url, "upnext worker")
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ConfigurationError(f"--concurrency must be >= 1, got {args.concurrency}")
        target.concurrency = args.concurrency
    if args.connect_timeout is not None:
        if not args.connect_timeout > 0:
            raise ConfigurationError(f"--connect-timeout must be > 0, got {args.connect_timeout}")
        target.connect_timeout = args.connect_timeout
    if args.queues:
        target.queues = [q for q in ",".join(args.queues).split(",") if q]
    if args.metrics or args.metrics_port is not None:
        target.enable_metrics(port=args.metrics_port, host=args.metrics_host)
    with worker_logging(args.log_level, args.log_format):
        return run(target)


def server(args: argparse.Namespace) -> int:
    """Serve the REST API and dashboard under uvicorn."""
    try:
        import uvicorn

        from upnext.server import ENV_ALLOWED_HOSTS, ENV_TOKEN, check_bind, create_app
    except ImportError as exc:
        return fail(
            f"upnext server needs the server extra ({exc.name} is missing): "
            "pip install 'upnext-core[server]'"
        )
    queues = list(args.queue or [])
    broker, results = args.broker, args.results
    if args.app:
        app_worker = _worker_at(args.app)
        queues += app_worker.consumed_queues() + [t.queue for t in app_worker.tasks.values()]
        broker = broker or app_worker.broker_url
        results = results or app_worker.results_url
    broker = broker or os.environ.get(ENV_BROKER)
    if not broker:
        return fail("no broker: pass --broker URL or set UPNEXT_BROKER_URL", 2)
    refuse_memory(broker, "upnext server")
    token = args.token or os.environ.get(ENV_TOKEN) or None
    check_bind(args.host, token, args.insecure)
    management = args.management_url or os.environ.get(ENV_MANAGEMENT) or None
    app = create_app(
        broker,
        results,
        token=token,
        queues=list(dict.fromkeys(queues)),
        management_url=management,
        allowed_hosts=_bound_hosts(
            args.host, args.port, args.allowed_host or [], bool(os.environ.get(ENV_ALLOWED_HOSTS))
        ),
    )
    auth = "token required" if token else "no token"
    print(
        f"upnext server for {redact_url(broker)} on http://{args.host}:{args.port} ({auth})",
        flush=True,
    )
    if management:
        print(f"queues from the management API at {redact_url(management)}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _bound_hosts(host: str, port: int, listed: list[str], env_listed: bool) -> list[str]:
    """The Host names to serve besides loopback: those listed, and the bound address.

    A wildcard bind (0.0.0.0, ::) has no one name: every Host is served
    unless some are listed (or in $UPNEXT_ALLOWED_HOSTS).
    """
    if host in ("0.0.0.0", "::", "[::]", ""):
        return listed if listed or env_listed else ["*"]
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return [*listed, f"{name}:{port}"]


def backends(args: argparse.Namespace) -> int:
    """Every installed URL scheme, the distribution serving it, and whether it keeps results."""
    stores = {ep.name.lower() for ep in entry_points(group=RESULT_STORE_GROUP)}
    rows = []
    for ep in sorted(entry_points(group=BROKER_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        rows.append([ep.name.lower(), dist, version, "yes" if ep.name.lower() in stores else "no"])
    if args.json:
        keys = ["scheme", "distribution", "version", "results"]
        print_json([dict(zip(keys, row, strict=True)) for row in rows])
    else:
        print(table(["SCHEME", "DISTRIBUTION", "VERSION", "RESULTS"], rows))
    return 0


def _kwargs(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; a value that parses as JSON is taken as JSON, else as a string."""
    kwargs: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--kw expects key=value, got {pair!r}")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    return kwargs


def submit(args: argparse.Namespace) -> int:
    """Submit one job of a task; print its id (and its result with --wait)."""
    task = load_object(args.target)
    if not isinstance(task, Task):
        raise ConfigurationError(f"{args.target} is not a task (decorate it with @worker.task)")
    refuse_memory(task.worker.broker_url, "upnext submit")
    kwargs = _kwargs(args.kw or [])
    return asyncio.run(_submit(task, kwargs, args.wait, args.json))


async def _submit(
    task: Task[..., object], kwargs: dict[str, object], wait: float | None, as_json: bool
) -> int:
    try:
        future = await task.submit(**kwargs)
        if wait is None:
            print_json({"job_id": future.job_id}) if as_json else print(future.job_id)
            return 0
        result = await future.result(timeout=wait)
        if as_json:
            print_json({"job_id": future.job_id, "status": result.status, "result": result.value})
        else:
            print(f"{future.job_id} {result.status}: {json.dumps(result.value, default=str)}")
        return 0
    finally:
        await task.worker.aclose()


def env_urls() -> tuple[str | None, str | None, str | None]:
    """The broker, results and management URLs from the environment."""
    return (
        os.environ.get(ENV_BROKER),
        os.environ.get(ENV_RESULTS),
        os.environ.get(ENV_MANAGEMENT),
    )
