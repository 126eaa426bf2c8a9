"""upnext on any broker: one worker process, concurrency 10, uvloop (``upnext[speed]``).

Burst and retry jobs keep no result (``result_ttl=0``), like the peers that store
none; the latency run keeps results so submit→result can be shown beside.
``UPNEXT_BENCH_METRICS=1`` runs the worker with job metrics on (`Worker(metrics=True)`),
to measure what counting costs. The ``upnext-observed`` framework runs the worker
as ``upnext worker --log-level info`` logs (a line per job, written to a file off
the event loop) with metrics on.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import _probe
import _servers
import upnext

SETTINGS = "concurrency=10, uvloop, retries=1 retry_delay=0.1 s (no backoff), result_ttl=0"


def _observed(config: _probe.Config) -> bool:
    return bool(config.extra.get("observed"))


def _lines_on(config: _probe.Config) -> bool:
    """Job lines on: upnext-observed and upnext-logged."""
    return _observed(config) or bool(config.extra.get("logged"))


def build(
    config: _probe.Config, probe: _probe.Probe
) -> tuple[upnext.Worker, upnext.Task[[int], None]]:
    """The worker and its one task, configured for this run's workload."""
    metrics = (
        os.environ.get("UPNEXT_BENCH_METRICS") == "1"
        or _observed(config)
        or bool(config.extra.get("metrics"))
    )
    # `metrics=` only when on: a `--baseline` commit from before it has no such argument.
    options: dict[str, Any] = {"metrics": True} if metrics else {}
    worker = upnext.Worker(
        config.queue, broker=config.url, concurrency=config.concurrency, **options
    )

    async def noop(i: int) -> None:
        probe.hit(i)

    task = worker.task(
        name="noop",
        retries=1 if config.workload == "retry" else 0,
        retry_delay=config.retry_delay,
        retry_backoff=1.0,
        result_ttl=60.0 if config.workload == "latency" else 0.0,
    )(noop)
    return worker, task


def _one(task: upnext.Task[[int], None]) -> Any:
    async def one(i: int) -> upnext.Future[None]:
        return await task.submit(i)

    return one


def _batch(task: upnext.Task[[int], None]) -> Any:
    async def batch(chunk: Sequence[int]) -> None:
        await task.submit_many([{"i": i} for i in chunk])

    return batch


async def _result_ms(handle: object, submitted: float) -> float:
    assert isinstance(handle, upnext.Future)
    await handle.result(30.0)
    return (time.time() - submitted) * 1000


async def _produce(config: _probe.Config) -> dict[str, Any]:
    worker, task = build(config, _probe.Probe(config))
    await worker.client()  # connected before the clock starts, as the peers' startup()
    rates = await _probe.produce_async(config, _one(task), _batch(task))
    await worker.aclose()
    return rates


async def _latency(config: _probe.Config) -> dict[str, Any]:
    worker, task = build(config, _probe.Probe(config))
    result = await _probe.latency_async(config, _one(task), _result_ms)
    await worker.aclose()
    return result


async def _inproc(config: _probe.Config) -> dict[str, Any]:
    """memory://: producer and worker share the process, as the broker is in it."""
    probe = _probe.Probe(config)
    worker, task = build(config, probe)
    if config.workload == "latency":
        async with worker:
            return await _probe.latency_async(config, _one(task), _result_ms)
    finished = asyncio.Event()
    probe.on_finish = finished.set
    rates = await _probe.produce_async(config, _one(task), _batch(task))
    async with worker:
        await finished.wait()
    return rates


def _clean(config: _probe.Config) -> None:
    if config.broker == "redis":
        _servers.flush_redis()
    elif config.broker == "rabbitmq":
        from upnext_rabbitmq.topology import amqp_queues

        _servers.clean_rabbit(amqp_queues(config.queue))
    elif config.broker == "postgres":
        _servers.drop_schema("bench_upnext")


def _work(config: _probe.Config) -> None:
    worker, _ = build(config, _probe.Probe(config))
    sys.exit(upnext.run(worker))


def _logged(role: Any) -> Any:
    """`role`, with job lines on inside what `upnext worker --log-level info` logs through."""

    def logged(config: _probe.Config) -> Any:
        if not _lines_on(config):
            return role(config)
        from upnext.cli._logging import worker_logging

        with (
            open(config.out + ".log", "w", encoding="utf-8") as log,
            worker_logging("info", "text", stream=log),
        ):
            return role(config)

    return logged


def _run_async(fn: Any) -> Any:
    def role(config: _probe.Config) -> Any:
        _probe.use_uvloop()
        return asyncio.run(fn(config))

    return role


def main() -> None:
    """Dispatch the role given on the command line."""
    warnings.simplefilter("ignore", RuntimeWarning)  # memory:// "no worker yet" on purpose
    _probe.dispatch(
        {
            "clean": lambda c: _clean(c),
            "produce": _run_async(_produce),
            "latency": _run_async(_latency),
            "inproc": _logged(_run_async(_inproc)),
            "work": _logged(_work),
        }
    )


if __name__ == "__main__":
    main()
