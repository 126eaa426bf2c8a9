"""Which frameworks run on which broker, in which configuration, from which runner file."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

__all__ = ["BROKERS", "WORKLOADS", "Framework", "server_url", "version_of"]

WORKLOADS = ("burst", "latency", "retry", "rss")


@dataclass(frozen=True, slots=True)
class Framework:
    """One framework as the harness runs it.

    `runner` is the file under ``benchmarks/peers/`` that plays its roles;
    `packages` are the distributions whose versions the report names;
    `settings` says how it was configured (what benchmarks/README.md explains);
    `workloads` are the ones it takes part in (a bare client has no retries);
    `confirms` says whether its publishes wait for the broker's confirm
    (RabbitMQ; "" where that does not apply); `extra` goes to the runner;
    `source` are folders imported before the installed packages (how an
    earlier commit of upnext runs beside this one: ``--baseline``).
    """

    name: str
    runner: str
    packages: tuple[str, ...]
    settings: str
    batch: str = "none"
    workloads: tuple[str, ...] = WORKLOADS
    confirms: str = ""
    extra: tuple[tuple[str, Any], ...] = ()
    # Source folders put first on the runner's PYTHONPATH (a baseline's checkout).
    source: tuple[str, ...] = ()


UPNEXT = Framework(
    "upnext",
    "upnext_peer.py",
    ("upnext-core",),
    "concurrency=10, uvloop, result_ttl=0 (latency: 60 s), retries=1 retry_delay=0.1 s",
    "Task.submit_many",
)
UPNEXT_AMQP = replace(UPNEXT, confirms="yes, every publish")
# What watching costs (issue #14's bar: drain within 15% of plain upnext in the same run).
UPNEXT_OBSERVED = replace(
    UPNEXT,
    name="upnext-observed",
    settings="as upnext, plus a line per job at INFO through `upnext worker`'s handler"
    " to a file, and metrics=True; burst only",
    workloads=("burst", "rss"),
    extra=(("observed", True),),
)
# Its two halves apart, to see which one costs what (`--only upnext,upnext-logged,...`).
UPNEXT_LOGGED = replace(
    UPNEXT_OBSERVED,
    name="upnext-logged",
    settings="as upnext, plus a line per job at INFO through `upnext worker`'s handler"
    " to a file; burst only",
    extra=(("logged", True),),
)
UPNEXT_METRICS = replace(
    UPNEXT_OBSERVED,
    name="upnext-metrics",
    settings="as upnext, plus metrics=True; burst only",
    extra=(("metrics", True),),
)
ARQ = Framework(
    "arq",
    "arq_peer.py",
    ("arq", "redis"),
    "max_jobs=10, poll_delay=0.001 s (default 0.5), keep_result=0, uvloop; retry: Retry(defer=0.1)",
)
SAQ = Framework(
    "saq",
    "saq_peer.py",
    ("saq", "redis"),
    "concurrency=10, uvloop; retries=2 retry_delay=0.1 s"
    " (a 1 s schedule timer moves due jobs: its floor)",
)
TASKIQ = Framework(
    "taskiq",
    "taskiq_peer.py",
    ("taskiq", "taskiq-redis", "taskiq-aio-pika"),
    "run_receiver_task max_async_tasks=10, uvloop, no result backend;"
    " SmartRetryMiddleware count=2 delay=0.1 s (list broker ignores the delay)",
)
# taskiq-aio-pika publishes on an aio-pika channel, which confirms by default.
TASKIQ_AMQP = replace(TASKIQ, confirms="yes (aio-pika channel default)")
DRAMATIQ = Framework(
    "dramatiq",
    "dramatiq_peer.py",
    ("dramatiq",),
    "1 process, worker_threads=10, no Results middleware; Retries max_retries=1 backoff=100 ms",
)
DRAMATIQ_AMQP = replace(DRAMATIQ, confirms="no (confirm_delivery=False, its default)")
DRAMATIQ_CONFIRM = replace(
    DRAMATIQ,
    name="dramatiq-confirm",
    settings="as dramatiq, RabbitmqBroker(confirm_delivery=True); burst only",
    workloads=("burst", "rss"),
    confirms="yes (confirm_delivery=True)",
    extra=(("confirm_delivery", True),),
)
CELERY = Framework(
    "celery",
    "celery_peer.py",
    ("celery", "kombu"),
    "-P solo, prefetch_multiplier=64, without gossip/mingle/heartbeat, no result backend;"
    " retry: autoretry countdown=0.1 s",
)
CELERY_AMQP = replace(
    CELERY, confirms="no (broker_transport_options confirm_publish=False, default)"
)
AIO_PIKA = Framework(
    "aio-pika",
    "aiopika_peer.py",
    ("aio-pika", "aiormq"),
    "no framework: confirming channel, persistent messages, 500 publishes per gather;"
    " consumer prefetch 20, ack per message, uvloop; burst only",
    "asyncio.gather of publishes",
    workloads=("burst", "rss"),
    confirms="yes, every publish",
)
PROCRASTINATE = Framework(
    "procrastinate",
    "procrastinate_peer.py",
    ("procrastinate", "psycopg"),
    "concurrency=10, listen_notify, uvloop;"
    " RetryStrategy max_attempts=2 wait=0 (whole seconds only)",
    "Task.batch_defer_async",
)
SAQ_PG = Framework(
    "saq",
    "saq_peer.py",
    ("saq", "psycopg"),
    "PostgresQueue (own schema), concurrency=10, uvloop; retries=2 retry_delay=0.1 s",
)
PGQUEUER = Framework(
    "pgqueuer",
    "pgqueuer_peer.py",
    ("pgqueuer", "asyncpg"),
    "entrypoint concurrency_limit=10, batch_size=10, uvloop;"
    " DatabaseRetryEntrypointExecutor max_attempts=2 initial_delay=0.1 s",
    "Queries.enqueue(list)",
)

BROKERS: dict[str, tuple[Framework, ...]] = {
    "memory": (UPNEXT, UPNEXT_OBSERVED, UPNEXT_LOGGED, UPNEXT_METRICS),
    "redis": (
        UPNEXT,
        UPNEXT_OBSERVED,
        UPNEXT_LOGGED,
        UPNEXT_METRICS,
        ARQ,
        SAQ,
        TASKIQ,
        DRAMATIQ,
        CELERY,
    ),
    "rabbitmq": (
        UPNEXT_AMQP,
        DRAMATIQ_AMQP,
        DRAMATIQ_CONFIRM,
        CELERY_AMQP,
        TASKIQ_AMQP,
        AIO_PIKA,
    ),
    "postgres": (UPNEXT, PROCRASTINATE, SAQ_PG, PGQUEUER),
}


def server_url(broker: str) -> str:
    """The one server every framework of `broker` uses (env BENCH_*_URL overrides)."""
    return {
        "memory": "memory://",
        "redis": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        "rabbitmq": os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        "postgres": os.environ.get(
            "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    }[broker]


def version_of(framework: Framework, broker: str) -> str:
    """Installed versions of the framework's distributions, e.g. ``celery 5.4.0, kombu 5.4.2``."""
    wanted = [p for p in framework.packages if _relevant(p, broker)]
    parts = []
    for package in wanted:
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} (not installed)")
    return ", ".join(parts)


def _relevant(package: str, broker: str) -> bool:
    if package == "taskiq-redis":
        return broker == "redis"
    if package == "taskiq-aio-pika":
        return broker == "rabbitmq"
    return True
