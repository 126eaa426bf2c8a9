"""saq on Redis or PostgreSQL: concurrency=10, uvloop, default timers (schedule every 1 s).

PostgreSQL tables live in their own schema (``bench_saq``) through the
connection's search_path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import _probe
import _servers
from saq import Queue, Worker  # type: ignore[import-not-found, unused-ignore]

PROBE = _probe.Probe(_probe.Config.load())
SCHEMA = "bench_saq"


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    """The benchmark job: saq retries any exception while attempts remain."""
    PROBE.hit(i)


def _queue(config: _probe.Config) -> Any:
    if config.broker == "postgres":
        url = f"{config.url}?options=-csearch_path%3D{SCHEMA}"
        return Queue.from_url(url, name=config.queue)
    return Queue.from_url(config.url, name=config.queue)


def _job_options(config: _probe.Config) -> dict[str, Any]:
    if config.workload == "retry":
        return {"retries": 2, "retry_delay": config.retry_delay}
    return {}


async def _with_queue(config: _probe.Config, run: Any) -> dict[str, Any]:
    queue = _queue(config)
    await queue.connect()
    options = _job_options(config)

    async def one(i: int) -> Any:
        return await queue.enqueue("noop", i=i, **options)

    result: dict[str, Any] = await run(config, one)
    await queue.disconnect()
    return result


def _clean(config: _probe.Config) -> None:
    if config.broker == "postgres":
        _servers.drop_schema(SCHEMA, config.url)
        _servers.create_schema(SCHEMA, config.url)
    else:
        _servers.flush_redis(config.url)


async def _work(config: _probe.Config) -> None:
    queue = _queue(config)
    await queue.connect()  # the PostgreSQL queue's pool must be open before the worker polls
    worker = Worker(
        queue,
        functions=[("noop", noop)],
        concurrency=config.concurrency,
        # The schedule timer doubles as a Redis lock TTL in whole seconds: 1 s is its floor.
    )
    await worker.start()


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _clean(c),
            "produce": lambda c: asyncio.run(_with_queue(c, _probe.produce_async)),
            "latency": lambda c: asyncio.run(_with_queue(c, _probe.latency_async)),
            "work": lambda c: asyncio.run(_work(c)),
        }
    )


if __name__ == "__main__":
    main()
