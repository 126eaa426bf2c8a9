"""pgqueuer on PostgreSQL (asyncpg): entrypoint concurrency_limit=10, batch_size=10, uvloop.

Its objects live in their own schema (``PGQUEUER_SCHEMA=bench_pgqueuer``).
Retry: DatabaseRetryEntrypointExecutor (2 attempts, 0.1 s initial delay): the
job goes back to the table, as the other frameworks' retries do.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import _probe
import _servers

SCHEMA = "bench_pgqueuer"
# Read by pgqueuer's settings when its objects are named: set before it is imported.
os.environ["PGQUEUER_SCHEMA"] = SCHEMA
os.environ["PGQUEUER_PREFIX"] = "bench_"

import asyncpg  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
from pgqueuer import PgQueuer, Queries  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
from pgqueuer.db import AsyncpgDriver  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
from pgqueuer.executors import DatabaseRetryEntrypointExecutor  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

CONFIG = _probe.Config.load()
PROBE = _probe.Probe(CONFIG)


async def _noop(job: Any) -> None:
    PROBE.hit(int(job.payload))


async def _queries(config: _probe.Config) -> tuple[Any, Any]:
    conn = await asyncpg.connect(config.url)
    return conn, Queries(AsyncpgDriver(conn))


async def _with_queries(config: _probe.Config, run: Any, batched: bool) -> dict[str, Any]:
    conn, queries = await _queries(config)

    async def one(i: int) -> Any:
        return await queries.enqueue("noop", str(i).encode())

    async def batch(chunk: Sequence[int]) -> Any:
        n = len(chunk)
        return await queries.enqueue(["noop"] * n, [str(i).encode() for i in chunk], [0] * n)

    result: dict[str, Any] = await (run(config, one, batch) if batched else run(config, one))
    await conn.close()
    return result


def _executor(params: Any) -> Any:
    return DatabaseRetryEntrypointExecutor(
        parameters=params, max_attempts=2, initial_delay=timedelta(seconds=CONFIG.retry_delay)
    )


async def _work(config: _probe.Config) -> None:
    conn = await asyncpg.connect(config.url)
    pgq = PgQueuer(AsyncpgDriver(conn))
    options: dict[str, Any] = {"concurrency_limit": config.concurrency}
    if config.workload == "retry":
        options["executor_factory"] = _executor
    pgq.entrypoint("noop", **options)(_noop)
    await pgq.run(batch_size=config.concurrency)


async def _install(config: _probe.Config) -> None:
    conn, queries = await _queries(config)
    await queries.install()
    await conn.close()


def _clean(config: _probe.Config) -> None:
    _servers.drop_schema(SCHEMA, config.url)
    asyncio.run(_install(config))


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _clean(c),
            "produce": lambda c: asyncio.run(_with_queries(c, _probe.produce_async, True)),
            "latency": lambda c: asyncio.run(_with_queries(c, _probe.latency_async, False)),
            "work": lambda c: asyncio.run(_work(c)),
        }
    )


if __name__ == "__main__":
    main()
