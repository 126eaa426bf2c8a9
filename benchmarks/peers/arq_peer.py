"""arq on Redis: max_jobs=10, poll_delay lowered to 1 ms (default 0.5 s), no results kept."""

from __future__ import annotations

import asyncio
from typing import Any

import _probe
import _servers
from arq import Retry, Worker  # type: ignore[import-not-found, unused-ignore]
from arq.connections import RedisSettings, create_pool  # type: ignore[import-not-found, unused-ignore]

PROBE = _probe.Probe(_probe.Config.load())


async def noop(ctx: dict[str, Any], i: int) -> None:
    """The benchmark job: arq retries a job only when it raises `Retry`."""
    try:
        PROBE.hit(i)
    except _probe.Flaky:
        raise Retry(defer=PROBE.config.retry_delay) from None


def _settings(config: _probe.Config) -> Any:
    return RedisSettings.from_dsn(config.url)


async def _pool(config: _probe.Config) -> Any:
    return await create_pool(_settings(config), default_queue_name=config.queue)


async def _produce(config: _probe.Config) -> dict[str, Any]:
    pool = await _pool(config)

    async def one(i: int) -> Any:
        return await pool.enqueue_job("noop", i)

    rates = await _probe.produce_async(config, one)  # arq has no batch enqueue
    await pool.aclose()
    return rates


async def _latency(config: _probe.Config) -> dict[str, Any]:
    pool = await _pool(config)

    async def one(i: int) -> Any:
        return await pool.enqueue_job("noop", i)

    result = await _probe.latency_async(config, one)
    await pool.aclose()
    return result


def _work(config: _probe.Config) -> None:
    _probe.use_uvloop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(
        functions=[noop],
        redis_settings=_settings(config),
        queue_name=config.queue,
        max_jobs=config.concurrency,
        poll_delay=0.001,
        keep_result=0,
        max_tries=5,
        handle_signals=True,
    )
    worker.run()


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _servers.flush_redis(c.url),
            "produce": lambda c: asyncio.run(_produce(c)),
            "latency": lambda c: asyncio.run(_latency(c)),
            "work": lambda c: _work(c),
        }
    )


if __name__ == "__main__":
    main()
