"""procrastinate on PostgreSQL (psycopg 3): concurrency=10, LISTEN/NOTIFY, uvloop.

Its tables live in their own schema (``bench_procrastinate``) through the
connection's search_path. Retry: RetryStrategy(max_attempts=2, wait=0), since
its waits are whole seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import _probe
import _servers
from procrastinate import App, PsycopgConnector, RetryStrategy  # type: ignore[import-not-found, unused-ignore]

CONFIG = _probe.Config.load()
PROBE = _probe.Probe(CONFIG)
SCHEMA = "bench_procrastinate"
QUEUE = "bench"

APP = App(
    connector=PsycopgConnector(conninfo=CONFIG.url, kwargs={"options": f"-c search_path={SCHEMA}"})
)


async def _noop(i: int) -> None:
    PROBE.hit(i)


NOOP = APP.task(name="noop", queue=QUEUE, retry=RetryStrategy(max_attempts=2, wait=0))(_noop)


async def _one(i: int) -> Any:
    return await NOOP.defer_async(i=i)


async def _batch(chunk: Sequence[int]) -> Any:
    return await NOOP.batch_defer_async(*({"i": i} for i in chunk))


async def _produce(config: _probe.Config) -> dict[str, Any]:
    async with APP.open_async():
        return await _probe.produce_async(config, _one, _batch)


async def _latency(config: _probe.Config) -> dict[str, Any]:
    async with APP.open_async():
        return await _probe.latency_async(config, _one)


async def _work(config: _probe.Config) -> None:
    async with APP.open_async():
        await APP.run_worker_async(queues=[QUEUE], concurrency=config.concurrency, wait=True)


async def _install() -> None:
    async with APP.open_async():
        await APP.schema_manager.apply_schema_async()


def _clean(config: _probe.Config) -> None:
    _servers.drop_schema(SCHEMA, config.url)
    _servers.create_schema(SCHEMA, config.url)
    asyncio.run(_install())


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _clean(c),
            "produce": lambda c: asyncio.run(_produce(c)),
            "latency": lambda c: asyncio.run(_latency(c)),
            "work": lambda c: asyncio.run(_work(c)),
        }
    )


if __name__ == "__main__":
    main()
